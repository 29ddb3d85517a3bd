"""Teacher-student distillation with atomic energies (methods.md §2).

A large teacher learns energies and forces; its per-atom energies become an extra per-atom
target for a sweep of smaller students (loss w_E L(E) + w_F L(F) + w_A L(e)); a control of
every student's size learns E and F only; a Born-Again student has the teacher's architecture
and a schedule that moves weight from the teacher's atom energies to the true labels.

Atom energies follow the core's reference convention (see :mod:`kdframe.knowledge.atomic`):
they include the per-species reference energies, so they sum to the total energy whatever
the architecture. Every model is selected on its validation force RMSE when it trains on forces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic

from ..config import Base, ModelSpec, Strict, resolve_path
from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..knowledge.atomic import AtomicEnergies
from ..potential import Potential
from ..teacher import Teacher
from ..training import LossTerm
from ..training.trainer import METRICS
from .base import Run, Workflow, loss_terms, settings
from .sweep import SweepRow, learning_curves, size_plot, sweep_table

TEACHER_LABEL = "teacher_atom_energies"
LABELS = {"forces": ("forces", "forces"), "energy": ("energy", "energy"),
          "atom_energies": ("atom_energies", TEACHER_LABEL)}  # this order: the first present is monitored
TRUE_LABELS = {k: LABELS[k] for k in ("forces", "energy")}
TEACHER_WEIGHTS = {"energy": 1.0, "forces": 10.0}  # teacher and controls (methods.md §2)
STUDENT_WEIGHTS = {"energy": 1.0, "forces": 30.0, "atom_energies": 100.0}
# (w_A, w_F, w_E) by epoch from methods.md §2, piecewise constant.
BORN_AGAIN_WEIGHTS = {
    "atom_energies": {1: 200, 200: 160, 250: 120, 300: 80, 350: 40, 400: 0},
    "forces": {1: 75, 200: 63, 250: 51, 300: 39, 350: 27, 400: 15},
    "energy": {1: 0, 200: 0.2, 250: 0.4, 300: 0.6, 350: 0.8, 400: 1},
}


class TeacherBlock(Strict):
    model: ModelSpec | None = None  # train the teacher here ...
    file: str | None = None  # ... or use a saved kdframe model
    training: dict[str, Any] = {}
    weights: dict[str, Any] = TEACHER_WEIGHTS

    @pydantic.model_validator(mode="after")
    def _one_source(self) -> "TeacherBlock":
        if (self.model is None) == (self.file is None):
            raise ValueError("give exactly one of 'model' (train the teacher here) or 'file' (a saved model)")
        return self


class StudentsBlock(Strict):
    models: list[ModelSpec] = pydantic.Field(min_length=1)  # the sweep, e.g. smaller and smaller widths
    training: dict[str, Any] = {}  # also the controls' settings
    weights: dict[str, Any] = STUDENT_WEIGHTS


class ControlsBlock(Strict):
    enabled: bool = True  # one control per student model: same architecture and settings, true labels only
    weights: dict[str, Any] = TEACHER_WEIGHTS


class BornAgainBlock(Strict):
    enabled: bool = True
    training: dict[str, Any] = {}
    weights: dict[str, Any] = BORN_AGAIN_WEIGHTS


class AtomicConfig(Base):
    workflow: Literal["atomic"]
    teacher: TeacherBlock
    students: StudentsBlock
    controls: ControlsBlock = ControlsBlock()
    born_again: BornAgainBlock = BornAgainBlock()


def terms(weights: dict[str, Any], labels: dict[str, tuple[str, str]], where: str) -> list[LossTerm]:
    """Loss terms in LABELS order, so the first one (monitored) is the forces term when there is one."""
    ordered = loss_terms(weights, labels, where)
    return sorted(ordered, key=lambda t: list(LABELS).index(t.quantity))


class Atomic(Workflow):
    name = "atomic"
    Config = AtomicConfig

    def model_specs(self, config: AtomicConfig) -> dict[str, ModelSpec]:
        specs = {f"students.models[{i}]": spec for i, spec in enumerate(config.students.models)}
        if config.teacher.model is not None:
            specs["teacher.model"] = config.teacher.model
        return specs

    def training_blocks(self, config: AtomicConfig) -> dict[str, dict[str, Any]]:
        return {"teacher.training": config.teacher.training, "students.training": config.students.training,
                "born_again.training": config.born_again.training}

    def weight_blocks(self, config: AtomicConfig):
        return {"teacher.weights": (config.teacher.weights, TRUE_LABELS),
                "students.weights": (config.students.weights, LABELS),
                "controls.weights": (config.controls.weights, TRUE_LABELS),
                "born_again.weights": (config.born_again.weights, LABELS)}

    def check(self, config: AtomicConfig, source: str) -> None:
        super().check(config, source)
        if config.data.train.forces is None:
            raise ConfigError(f"{source}: data.train.forces", "the atomic workflow trains on forces: name their key")
        if config.teacher.file and not resolve_path(config.teacher.file, Path(source).parent).is_file():
            raise ConfigError(f"{source}: teacher.file", f"model file not found: {config.teacher.file}")

    def run(self, run: Run, until: str = "run") -> str:
        config: AtomicConfig = run.config
        teacher = self.teacher(run, config)
        if until == "train":
            return run.evaluate({"teacher": teacher}, "Atomic-energy distillation: teacher")
        rows = [SweepRow("teacher", "teacher", teacher, run.dir / "teacher" / METRICS)]  # before it is frozen
        knowledge = Teacher(teacher, "teacher")
        atoms = run.knowledge(AtomicEnergies(TEACHER_LABEL), knowledge, run.data)
        if until == "label":
            return f"Teacher atom energies cached in {run.dir / 'knowledge'}"
        data, fingerprint = run.data.with_labels(**{TEACHER_LABEL: atoms}), knowledge.fingerprint()
        students, controls = config.students, config.controls
        for i, spec in enumerate(students.models):
            stage = f"student_{i + 1}"
            model = run.train(stage, spec, terms(students.weights, LABELS, "students.weights"),
                              settings(config, students.training, "students.training"), data, run.splits["train"],
                              run.splits["valid"], config.seed + 100 + i, {"weights": students.weights,
                                                                           "teacher": fingerprint})
            rows.append(SweepRow(f"student {i + 1}", "student", model, run.dir / stage / METRICS))
            if controls.enabled:
                stage = f"control_{i + 1}"
                model = run.train(stage, spec, terms(controls.weights, TRUE_LABELS, "controls.weights"),
                                  settings(config, students.training, "students.training"), run.data,
                                  run.splits["train"], run.splits["valid"], config.seed + 100 + i,
                                  {"weights": controls.weights})
                rows.append(SweepRow(f"control {i + 1}", "control", model, run.dir / stage / METRICS))
        if config.born_again.enabled:
            block = config.born_again
            spec = ModelSpec(architecture=teacher.architecture.name, **teacher.hyperparameters)
            model = run.train("born_again", spec, terms(block.weights, LABELS, "born_again.weights"),
                              settings(config, block.training, "born_again.training"), data, run.splits["train"],
                              run.splits["valid"], config.seed + 99, {"weights": block.weights, "teacher": fingerprint})
            rows.append(SweepRow("born-again", "born-again", model, run.dir / "born_again" / METRICS))
        return self.report(run, rows)

    def teacher(self, run: Run, config: AtomicConfig) -> Potential:
        block = config.teacher
        if block.file is not None:
            model = Potential.load(resolve_path(block.file, run.config_dir)).to(run.device)
            missing = sorted(set(run.species) - set(model.species))
            if missing:
                raise ConfigError("teacher.file", f"the teacher knows elements {model.species}, the data also has {missing}")
            return model
        return run.train("teacher", block.model, terms(block.weights, TRUE_LABELS, "teacher.weights"),
                         settings(config, block.training, "teacher.training"), run.data, run.splits["train"],
                         run.splits["valid"], config.seed, {"weights": block.weights})

    @staticmethod
    def report(run: Run, rows: list[SweepRow]) -> str:
        results = run.scores({row.name: row.model for row in rows})
        size = size_plot(run.dir / "plots" / "force_error_vs_weights.png", rows, results["test"])
        curves = learning_curves(run.dir / "plots" / "learning_curves.png", rows)
        sweep = sweep_table(rows, results["test"])
        notes = "\n\n".join([f"## Error vs trainable weights (test split)\n\n{sweep}",
                             *(f"![{p.stem}](plots/{p.name})" for p in (size, curves) if p is not None)])
        return f"{sweep}\n\n" + run.evaluate({}, "Atomic-energy distillation", notes, results)


@hookimpl
def register_workflows(register) -> None:
    register(Atomic())
