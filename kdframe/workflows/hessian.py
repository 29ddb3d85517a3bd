"""Projected Hessian learning (methods.md §4): E-F vs E-F-HVP vs E-F-H, and teacher-HVP distillation.

Every variant learns the data's energies and forces and, as its ``weights`` say, ``hvp`` (the data
Hessian times probes drawn as ``probes`` says: one-hot, Rademacher or Gaussian, fixed per configuration
or fresh per minibatch) or ``hessian`` (the full Hessian, 3N HVPs per configuration). ``distillation``
takes one trained variant as the teacher: a student learns the teacher's H·v (``teacher_hvp``) besides
E and F, and a control of the student's size E and F only. Every model is selected on its validation
force RMSE; the table adds the Hessian RMSE (kcal/mol/Å²) on the test split, and a second table the
trainable weights and time per epoch.
"""

from __future__ import annotations

import re
import statistics
from typing import Any, Literal

import pydantic

from ..config import Base, ModelSpec, Strict
from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..potential import Potential
from ..probes import ProbeSettings
from ..student import TRUE_LABELS, Student
from ..teacher import Teacher
from ..training.trainer import METRICS
from .base import Run, Workflow, knowledge_source
from .sweep import SweepRow, read_curve

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
    teacher: str  # name of a trained variant
    student: HvpStudent  # the smaller model; its weights may name teacher_hvp
    control: bool = True  # the student's model and settings on E and F only


class HessianConfig(Base):
    workflow: Literal["hessian"]
    model: ModelSpec
    variants: dict[str, Variant] = pydantic.Field(min_length=1)
    distillation: Distillation | None = None

    @pydantic.model_validator(mode="after")
    def _default_models(self) -> "HessianConfig":
        """Variants without a model get the top-level one."""
        blocks = [*self.variants.values(), *([self.distillation.student] if self.distillation else [])]
        for block in blocks:
            block.model = block.model or self.model
        return self


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
        if config.distillation and config.distillation.teacher not in config.variants:
            raise ConfigError(f"{source}: distillation.teacher", "not a variant", config.variants)

    def run(self, run: Run, until: str = "run") -> str:
        config: HessianConfig = run.config
        rows = [self.row(run, name, stage_name(name), self.train(run, stage_name(name), variant))
                for name, variant in config.variants.items()]  # rows before a teacher is frozen
        if until != "train" and config.distillation is not None:
            teacher = next(r.model for r in rows if r.name == config.distillation.teacher)
            rows += self.distill(run, config.distillation, teacher, until)
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

    def distill(self, run: Run, block: Distillation, teacher_model: Potential, until: str) -> list[SweepRow]:
        """The student on the teacher's H·v (cached for fixed probes, online for fresh ones) and its E-F control."""
        teacher = Teacher(teacher_model, block.teacher)
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
        rows = [self.row(run, f"student ({block.teacher} HVPs)", "student", student)]
        if block.control:
            ef = {k: w for k, w in block.student.weights.items() if k in EF_WEIGHTS}
            control = self.train(run, "control", block.student.with_weights(ef))
            rows.append(self.row(run, "control (student size, E-F)", "control", control))
        return rows

    @staticmethod
    def report(run: Run, rows: list[SweepRow]) -> str:
        """The cost table (trainable weights, epochs, median time per epoch) and the error table."""
        lines = ["| model | trainable weights | epochs | median s/epoch |", "|---|---|---|---|"]
        for row in rows:
            epochs, seconds = read_curve(row.metrics_csv, "seconds")
            median = f"{statistics.median(seconds):.3f}" if seconds else "—"
            lines.append(f"| {row.name} | {row.n_weights} | {len(epochs)} | {median} |")
        cost = "\n".join(lines)
        models = {row.name: row.model for row in rows}
        return f"{cost}\n\n" + run.evaluate(models, "Projected Hessian learning", f"## Cost\n\n{cost}")


@hookimpl
def register_workflows(register) -> None:
    register(Hessian())
