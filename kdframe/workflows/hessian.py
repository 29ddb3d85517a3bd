"""Projected Hessian learning (methods.md §4): E-F vs E-F-HVP vs E-F-H, and teacher-HVP distillation.

Every variant learns the data's energies and forces and, as its ``weights`` say, ``hvp`` (the data
Hessian times probes drawn as ``probes`` says: one-hot, Rademacher or Gaussian, fixed per configuration
or fresh per minibatch) or ``hessian`` (the full Hessian, 3N HVPs per configuration). ``distillation``
takes one trained variant, or a teacher block (``{pretrained: ani1ccx}``, ``{files: [...]}``), as the
teacher: a student learns the teacher's H·v (``teacher_hvp``) besides E and F, and a control of the
student's size E and F only. Every model is selected on its validation force RMSE; the table adds the
Hessian RMSE (kcal/mol/Å²) and frequency errors on the test split, a second table the trainable weights and
training time, and a plot the validation force RMSE against training time.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydantic

from ..config import Base, ModelSpec, Strict
from ..errors import ConfigError, WriteError
from ..hookspecs import hookimpl
from ..io import warn
from ..potential import Potential
from ..plugins import registry
from ..probes import ProbeSettings
from ..report import plt, save_figure
from ..student import TRUE_LABELS, Student
from ..teacher import Teacher
from ..training.trainer import METRICS
from ..units import EV_TO_KCAL_MOL
from .base import Run, Workflow, knowledge_source
from .sweep import FORCE_COLUMN, SweepRow, read_curve
from .teachers import TeacherSource

TEACHER_LABEL = "teacher_hvp"
EF_WEIGHTS = {"energy": 1.0, "forces": 10.0}


class Variant(Student):
    """E and F, plus ``hvp`` (the data Hessian along probes) or ``hessian`` (the full Hessian)."""

    LABELS = {"forces": TRUE_LABELS["forces"], "energy": TRUE_LABELS["energy"],
              "hvp": ("hvp", "hessian", "hessian:probe"), "hessian": ("hessian", "hessian")}
    FIRST = ("forces",)  # validation force RMSE selects every model
    model: ModelSpec | None = None  # default: the top-level model
    weights: dict[str, Any] = EF_WEIGHTS
    probes: ProbeSettings = ProbeSettings()  # for an hvp / teacher_hvp term


class HvpStudent(Variant):
    """E and F, plus the teacher's H·v along the probes."""

    LABELS = {"forces": TRUE_LABELS["forces"], "energy": TRUE_LABELS["energy"],
              TEACHER_LABEL: ("hvp", TEACHER_LABEL, f"{TEACHER_LABEL}:probe")}


class Distillation(Strict):
    teacher: str | TeacherSource  # name of a trained variant, or a teacher block (pretrained or files)
    student: HvpStudent  # the smaller model; its weights may name teacher_hvp
    control: bool = True  # the student's model and settings on E and F only

    @pydantic.field_validator("teacher", mode="wrap")
    @classmethod
    def _name_or_block(cls, value: Any, handler: Any, info: pydantic.ValidationInfo) -> str | TeacherSource:
        """A name as it is; a mapping as a teacher block, so its errors name its own keys (not a union's)."""
        if isinstance(value, str):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"{value!r}: give a variant's name, or a teacher block ({{pretrained: NAME}} or "
                             "{files: [...]})")
        block = TeacherSource.model_validate(value, context=info.context)
        if block.train is not None:
            raise ValueError("a teacher trained here is a variant: add it under variants and give its name here")
        return block


class HessianConfig(Base):
    workflow: Literal["hessian"]
    model: ModelSpec
    variants: dict[str, Variant] = {}  # may be empty when the distillation's teacher comes from elsewhere
    distillation: Distillation | None = None

    @pydantic.model_validator(mode="after")
    def _default_models(self) -> "HessianConfig":
        """Variants without a model get the top-level one."""
        blocks = [*self.variants.values(), *([self.distillation.student] if self.distillation else [])]
        for block in blocks:
            block.model = block.model or self.model
        return self


RESERVED_STAGES = {"student", "control", "teacher", "knowledge", "plots"}  # the run directory's other folders


def stage_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "variant"


class Hessian(Workflow):
    name = "hessian"
    Config = HessianConfig

    def check(self, config: HessianConfig, source: str) -> None:
        train = config.data.train
        for key in ("forces", "hessian"):
            if getattr(train, key) is None:
                raise ConfigError(f"{source}: data.train.{key}", f"the hessian workflow needs {key}: name their key")
        stages = [stage_name(n) for n in config.variants]
        if len(set(stages)) < len(stages):
            raise ConfigError(f"{source}: variants", f"names must differ in more than punctuation/case: {stages}")
        taken = sorted(set(stages) & RESERVED_STAGES)
        if taken:
            raise ConfigError(f"{source}: variants", f"{taken} would share a folder of the run directory; rename them "
                              f"(reserved: {', '.join(sorted(RESERVED_STAGES))})")
        teacher = config.distillation.teacher if config.distillation else None
        if isinstance(teacher, str) and teacher not in config.variants:
            hint = (f"for the pretrained ensemble write {{pretrained: {teacher}}}" if teacher in registry().pretrained
                    else "give a variant's name, or a teacher block such as {pretrained: ani1ccx}")
            raise ConfigError(f"{source}: distillation.teacher", f"{teacher!r} is not a variant ({hint})",
                              config.variants)
        if not config.variants and teacher is None:
            raise ConfigError(f"{source}: variants", "give at least one variant, or a distillation block whose "
                              "teacher is a teacher block such as {pretrained: ani1ccx}")

    def run(self, run: Run, until: str = "run") -> str:
        config: HessianConfig = run.config
        block = config.distillation
        outside = None  # a teacher from elsewhere, loaded first: a missing file or element fails before any training
        if block is not None and isinstance(block.teacher, TeacherSource) and until != "train":
            outside = self.outside_teacher(run, block.teacher)
        rows = [self.row(run, name, stage_name(name), self.train(run, stage_name(name), variant))
                for name, variant in config.variants.items()]  # rows before a teacher is frozen
        if until == "train" and not rows:
            return "This run has no variants to train; `kdframe run` trains the student and its control"
        if until != "train" and block is not None:
            teacher = outside or Teacher(next(r.model for r in rows if r.name == block.teacher), block.teacher)
            if outside is not None:
                weights = sum(p.numel() for p in teacher.model.parameters())  # frozen: not counted as trainable
                rows.append(SweepRow(teacher.name, "teacher", teacher.model, run.dir / "teacher" / METRICS, weights))
            rows += self.distill(run, block, teacher, until)
        if until == "label":
            return f"Teacher HVPs cached in {run.dir / 'knowledge'} (fresh probes are taken online while training)"
        return self.report(run, rows)

    @staticmethod
    def row(run: Run, name: str, stage: str, model: Potential) -> SweepRow:
        return SweepRow(name, stage, model, run.dir / stage / METRICS)

    @staticmethod
    def train(run: Run, stage: str, variant: Variant, identity: dict[str, Any] | None = None, data=None,
              online=()) -> Potential:
        """One model; probes are drawn for its curvature term unless the data carries them (fixed teacher HVPs)."""
        data = run.data if data is None else data
        probes = {t.probe: variant.probes for t in variant.terms() if t.probe and t.probe not in data.labels}
        return run.fit(stage, variant, data, run.config.seed, identity=identity, probes=probes, online=online)

    @staticmethod
    def outside_teacher(run: Run, block: TeacherSource) -> Teacher:
        """The models of a teacher block (aligned to the data's energies, so its table row compares)."""
        ensemble = block.ensemble(run, "distillation.teacher", "teacher", run.config.seed)
        return Teacher(ensemble, f"pretrained {block.pretrained}" if block.pretrained else "teacher files")

    def distill(self, run: Run, block: Distillation, teacher: Teacher, until: str) -> list[SweepRow]:
        """The student on the teacher's H·v (cached for fixed probes, online for fresh ones) and its E-F control."""
        source = knowledge_source("teacher_hvp", TEACHER_LABEL, {"probes": block.student.probes.model_dump()})
        data, online = run.data, []
        if TEACHER_LABEL in block.student.weights:
            if block.student.probes.regime == "fixed":
                data = source.with_labels(run.data, run.knowledge(source, teacher, run.data))
            else:
                online = [(source, teacher)]
        if until == "label":
            return []
        student = self.train(run, "student", block.student, {"teacher": teacher.fingerprint()}, data, online)
        rows = [self.row(run, f"student ({teacher.name} HVPs)", "student", student)]
        if block.control:
            ef = {k: w for k, w in block.student.weights.items() if k in EF_WEIGHTS}
            control = self.train(run, "control", block.student.with_weights(ef))
            rows.append(self.row(run, "control (student size, E-F)", "control", control))
        return rows

    @staticmethod
    def report(run: Run, rows: list[SweepRow]) -> str:
        """The cost table (trainable weights, epochs, time per epoch and in all), a time-to-accuracy plot and the
        error table."""
        lines = ["| model | weights | epochs | median s/epoch | total s |", "|---|---|---|---|---|"]
        for row in rows:
            epochs, seconds = read_curve(row.metrics_csv, "seconds")
            median, total = (f"{statistics.median(seconds):.3f}", f"{sum(seconds):.1f}") if seconds else ("—", "—")
            lines.append(f"| {row.name} | {row.n_weights} | {len(epochs)} | {median} | {total} |")
        cost = "\n".join(lines)
        try:
            plot = time_to_accuracy(run.dir / "plots" / "time_to_accuracy.png", rows)
        except WriteError as exc:  # a finished run in a read-only folder still prints its tables
            warn(f"the time-to-accuracy plot could not be written ({exc})")
            plot = None
        notes = f"## Cost\n\n{cost}" + (f"\n\n![time to accuracy](plots/{plot.name})" if plot else "")
        models = {row.name: row.model for row in rows}
        return f"{cost}\n\n" + run.evaluate(models, "Projected Hessian learning", notes)


def time_to_accuracy(path: Path, rows: list[SweepRow]) -> Path | None:
    """Validation force RMSE (best so far) vs cumulative training seconds of every model; None if none has a curve."""
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for row in rows:
        _, seconds = read_curve(row.metrics_csv, "seconds")
        _, forces = read_curve(row.metrics_csv, FORCE_COLUMN.format(split="valid"))
        if seconds and len(seconds) == len(forces):
            ax.plot(np.cumsum(seconds), np.fmin.accumulate(forces) * EV_TO_KCAL_MOL, lw=1.2, label=row.name)
    if not ax.lines:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("best validation force RMSE (kcal/mol/Å)")
    ax.legend(fontsize=6)
    return save_figure(fig, path)


@hookimpl
def register_workflows(register) -> None:
    register(Hessian())
