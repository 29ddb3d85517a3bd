"""Ensemble knowledge distillation (methods.md §1).

A teacher ensemble (trained here on energies only, saved files or a pretrained ensemble) ->
ensemble-averaged forces for every configuration -> a student trained on true energies + those
forces (on the configurations with a true energy, as in methods.md; ``student.configurations: all``
adds those without) with a scheduled force weight (on periodic data, with ``weights.stress``, also
on the teachers' ensemble-averaged stress); a control of the student's architecture on energies
only; optionally a second generation taught by an ensemble of first-generation students.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic

from ..config import Base
from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..potential import Ensemble, Potential
from ..student import TRUE_LABELS, Student
from ..teacher import Teacher
from .base import Run, Workflow, compare_files, compared, knowledge_source
from .explore import Explore, exploration_table, explore, starting_systems
from .teachers import TeacherSource

# w_F by epoch from methods.md §1 (w_E = 1 throughout).
FORCE_SCHEDULE = {1: 10, 20: 9, 40: 8, 60: 7, 80: 6, 100: 5, 120: 4, 140: 3, 160: 2, 180: 1, 200: 0.5}


class EkdStudent(Student):
    """The student learns the teachers' forces (and stress) besides the true energies."""

    LABELS = {"energy": TRUE_LABELS["energy"], "forces": ("forces", "teacher_forces"),
              "stress": ("stress", "teacher_stress")}
    weights: dict[str, Any] = {"energy": 1.0, "forces": FORCE_SCHEDULE}
    # Which training configurations the student learns on. "labelled": those with a ground-truth energy,
    # the teachers' and the control's configurations (methods.md §1: "the augmented dataset keeps the same
    # configurations"). "all": also those without one, taught by the teachers' forces alone; the control
    # cannot use them, so a student-vs-control comparison then also measures the extra configurations.
    configurations: Literal["labelled", "all"] = "labelled"


class EkdConfig(Base):
    workflow: Literal["ekd"]
    teachers: TeacherSource
    student: EkdStudent
    control: bool = True
    compare: dict[str, list[str]] = {}  # extra table rows: name -> saved model files (an ensemble if several)
    generations: Literal[1, 2] = 1
    students_per_generation: int = pydantic.Field(4, ge=1)  # first-generation students teaching generation 2
    explore: Explore | None = None  # on-policy rounds after the student is trained (workflows/explore.py)


class Ekd(Workflow):
    name = "ekd"
    Config = EkdConfig
    labelled_sources_at = ("student.sources",)

    def check(self, config: EkdConfig, source: str) -> None:
        for name in config.compare:
            compare_files(config.compare, name, Path(source).parent)
        config.teachers.check_confidence(config.student.sources, "student.sources", "teachers")
        if config.explore is not None:
            if config.generations == 2:
                raise ConfigError("explore", "explores the first-generation student: use it with generations: 1")
            config.explore.check_student(config.student)

    def run(self, run: Run, until: str = "run") -> str:
        config: EkdConfig = run.config
        if "stress" in config.student.weights and not (run.data.periodic and run.data.pbc.all(axis=1).any()):
            raise ConfigError("student.weights.stress", "data.train has no configuration periodic in all three "
                              "directions, so the teachers have no stress to teach; drop this weight")
        systems = None if config.explore is None else starting_systems(config.explore, run)
        ensemble = config.teachers.ensemble(run, "teachers", "teacher", config.seed + 1)
        models: dict[str, Potential | Ensemble] = {f"teacher {i + 1}": t for i, t in enumerate(ensemble.members)}
        models["teacher ensemble"] = ensemble
        if until == "train":
            return run.evaluate(models, "EKD teachers")
        data = self.distil(run, ensemble, "teachers")
        block = config.student.model_copy(update={"sources": config.teachers.labelled_sources(
            run, config.student.sources, data[1], "teacher")})
        if until == "label":
            return (f"Ensemble forces of {len(ensemble.members)} teachers (and the labels of sources labelled by them) "
                    f"cached in {run.dir / 'knowledge'}")
        n_first = config.students_per_generation if config.generations == 2 else 1
        first = [self.student(run, block, data, f"student_g1_{j + 1}" if n_first > 1 else "student", j)
                 for j in range(n_first)]
        models.update({("student" if n_first == 1 else f"student g1 #{j + 1}"): s for j, s in enumerate(first)})
        if config.generations == 2:
            models["student g2"] = self.student(run, block, self.distil(run, Ensemble(first), "students_g1"),
                                                "student_g2", n_first)
        if config.control:
            energy_only = config.student.with_weights({"energy": config.student.weights.get("energy", 1.0)})
            models["control"] = run.fit("control", energy_only, run.data, config.seed + 7)
        notes = ""
        if config.explore is not None:
            rounds = explore(run, block, run.dir / "student" / "model.pt", ensemble, config.explore, systems,
                             config.seed + 300, lambda stage, tuned, start: self.student(run, tuned, data, stage, 0,
                                                                                         start=start))
            models.update({f"student, explored {s['round']}": Potential.load(s["model"]).to(run.device)
                           for s in rounds if "model" in s})
            notes = f"Exploration rounds (student MD watched by the teachers):\n\n{exploration_table(rounds)}\n"
        models.update(compared(config.compare, run.config_dir, run.device))
        return run.evaluate(models, "Ensemble knowledge distillation", notes)

    @staticmethod
    def distil(run: Run, ensemble: Ensemble, name: str):
        """run.data with the ensemble's averaged forces (and stress, if the student learns it); its fingerprint."""
        teacher = Teacher(ensemble, name)
        wanted = {"teacher_forces": "ensemble_forces", "teacher_stress": "ensemble_stress"}
        if "stress" not in run.config.student.weights:
            del wanted["teacher_stress"]
        knowledge = {label: run.knowledge(knowledge_source(source, label), teacher, run.data)
                     for label, source in wanted.items()}
        return run.data.with_labels(**knowledge), teacher.fingerprint()

    @staticmethod
    def student(run: Run, block: EkdStudent, distilled, stage: str, index: int, start: Path | None = None) -> Potential:
        data, teacher_fingerprint = distilled
        train, valid = run.splits["train"], run.splits["valid"]
        if block.configurations == "labelled":
            has_energy = data.labelled(["energy"])
            train, valid = train[has_energy[train]], valid[has_energy[valid]]
        return run.fit(stage, block, data, run.config.seed + 100 + index, train_idx=train, valid_idx=valid,
                       identity={"teacher": teacher_fingerprint}, start=start)


@hookimpl
def register_workflows(register) -> None:
    register(Ekd())
