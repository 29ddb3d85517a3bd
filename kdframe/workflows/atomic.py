"""Teacher-student distillation with atomic energies (methods.md §2).

A large teacher learns energies and forces; its per-atom energies become an extra per-atom
target for a sweep of smaller students (loss w_E L(E) + w_F L(F) + w_A L(e)); a control of
every student's size learns E and F only; a Born-Again student has the teacher's architecture
and a schedule that moves weight from the teacher's atom energies to the true labels. Students (not controls) may
train on more configurations (``students.sources``); ``labelled_by: teachers`` ones get the teacher's energies,
forces and, with an ``atom_energies`` weight, atom energies.

Atom energies follow the core's reference convention (see :mod:`kdframe.knowledge.atomic`):
they include the per-species reference energies, so they sum to the total energy whatever
the architecture. Every model is selected on its validation force RMSE when it trains on forces.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic

from ..config import Base, ModelSpec, Strict
from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..student import TRUE_LABELS, Student, Sweep, check_weights
from ..teacher import Teacher
from ..training.trainer import METRICS
from .base import Run, Workflow, knowledge_source
from .sweep import SweepRow, sweep_report
from .teachers import TeacherSource, TrainedTeachers

TEACHER_LABEL = "teacher_atom_energies"
TEACHER_WEIGHTS = {"energy": 1.0, "forces": 10.0}  # teacher and controls (methods.md §2)
# (w_A, w_F, w_E) by epoch from methods.md §2, piecewise constant.
BORN_AGAIN_WEIGHTS = {
    "atom_energies": {1: 200, 200: 160, 250: 120, 300: 80, 350: 40, 400: 0},
    "forces": {1: 75, 200: 63, 250: 51, 300: 39, 350: 27, 400: 15},
    "energy": {1: 0, 200: 0.2, 250: 0.4, 300: 0.6, 350: 0.8, 400: 1},
}


class Control(Student):
    """True energies and forces; its forces term first, so validation force RMSE selects the model."""

    LABELS = {k: TRUE_LABELS[k] for k in ("energy", "forces")}
    FIRST = ("forces", "energy")
    weights: dict[str, Any] = TEACHER_WEIGHTS


class AtomicStudent(Control):
    """Also the teacher's atom energies."""

    LABELS = {**Control.LABELS, "atom_energies": ("atom_energies", TEACHER_LABEL)}
    weights: dict[str, Any] = {"energy": 1.0, "forces": 30.0, "atom_energies": 100.0}


class AtomicTeachers(Control, TrainedTeachers):
    """A teacher trained here: energies and forces (methods.md §2)."""


class AtomicTeacherSource(TeacherSource):
    train: AtomicTeachers | None = None


class StudentSweep(Sweep):
    STUDENT = AtomicStudent
    weights: dict[str, Any] = AtomicStudent.model_fields["weights"].default


class Controls(Strict):
    enabled: bool = True  # one control per student model: same architecture and settings, true labels only
    weights: dict[str, Any] = TEACHER_WEIGHTS
    _weights = pydantic.field_validator("weights")(lambda weights: check_weights(weights, Control.LABELS))


class BornAgain(AtomicStudent):
    enabled: bool = True
    model: ModelSpec | None = None  # default: the teacher's architecture (its first member's)
    weights: dict[str, Any] = BORN_AGAIN_WEIGHTS


class AtomicConfig(Base):
    workflow: Literal["atomic"]
    teacher: AtomicTeacherSource
    students: StudentSweep
    controls: Controls = Controls()
    born_again: BornAgain = BornAgain()


class Atomic(Workflow):
    name = "atomic"
    Config = AtomicConfig
    labelled_sources_at = ("students.sources", "born_again.sources")

    def check(self, config: AtomicConfig, source: str) -> None:
        if config.data.train.forces is None:
            raise ConfigError(f"{source}: data.train.forces", "the atomic workflow trains on forces: name their key")
        config.teacher.check_confidence(config.students.sources, "students.sources", "teacher")
        config.teacher.check_confidence(config.born_again.sources, "born_again.sources", "teacher")

    def run(self, run: Run, until: str = "run") -> str:
        config: AtomicConfig = run.config
        teachers = config.teacher.ensemble(run, "teacher", "teacher", config.seed)
        teacher = teachers.members[0] if len(teachers.members) == 1 else teachers
        if until == "train":
            return run.evaluate({"teacher": teacher}, "Atomic-energy distillation: teacher")
        rows = [SweepRow("teacher", "teacher", teacher, run.dir / "teacher" / METRICS)]  # before it is frozen
        knowledge = Teacher(teacher, "teacher")
        atoms = run.knowledge(knowledge_source("atomic_energies", TEACHER_LABEL), knowledge, run.data)
        data, identity = run.data.with_labels(**{TEACHER_LABEL: atoms}), {"teacher": knowledge.fingerprint()}

        def labelled(block: StudentSweep | BornAgain) -> StudentSweep | BornAgain:  # sources labelled by the teacher
            return block.model_copy(update={"sources": config.teacher.labelled_sources(
                run, block.sources, identity["teacher"], "teacher")})

        students = labelled(config.students)
        born_again = labelled(config.born_again) if config.born_again.enabled else None
        if until == "label":
            return f"Teacher atom energies (and the labels of sources labelled by it) cached in {run.dir / 'knowledge'}"

        def fit(name: str, stage: str, block: Student, data, seed: int, **kwargs) -> None:
            model = run.fit(stage, block, data, seed, **kwargs)
            rows.append(SweepRow(name, name.split()[0], model, run.dir / stage / METRICS))

        for i, student in enumerate(students.students()):
            fit(f"student {i + 1}", f"student_{i + 1}", student, data, config.seed + 100 + i, identity=identity)
            if config.controls.enabled:
                control = Control(model=student.model, training=student.training, weights=config.controls.weights)
                fit(f"control {i + 1}", f"control_{i + 1}", control, run.data, config.seed + 100 + i)
        if born_again is not None:
            first = teachers.members[0]
            spec = born_again.model or ModelSpec(architecture=first.architecture.name, **first.hyperparameters)
            fit("born-again", "born_again", born_again.model_copy(update={"model": spec}), data,
                config.seed + 99, identity=identity)
        return sweep_report(run, rows, "Atomic-energy distillation")


@hookimpl
def register_workflows(register) -> None:
    register(Atomic())
