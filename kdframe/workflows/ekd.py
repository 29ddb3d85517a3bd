"""Ensemble knowledge distillation (methods.md §1).

k teachers trained on energies only (different seeds and splits) -> ensemble-averaged
forces for every configuration -> a student trained on true energies + those forces (on the
configurations with a true energy, as in methods.md; ``student.configurations: all`` adds those without)
with a scheduled force weight (on periodic data, with ``weights.stress``, also on the teachers'
ensemble-averaged stress); a control of the student's architecture on energies
only; optionally a second generation taught by an ensemble of first-generation students.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydantic

from ..config import Base, ModelSpec, Strict, resolve_path
from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..plugins import registry
from ..knowledge.ensemble import EnsembleForces, EnsembleStress
from ..potential import Ensemble, Potential
from ..teacher import Teacher, align_reference_energies
from .base import Run, Workflow, compare_files, compared, loss_terms, settings

# w_F by epoch from methods.md §1 (w_E = 1 throughout).
FORCE_SCHEDULE = {1: 10, 20: 9, 40: 8, 60: 7, 80: 6, 100: 5, 120: 4, 140: 3, 160: 2, 180: 1, 200: 0.5}
ENERGY_ONLY = {"energy": ("energy", "energy")}
WITH_TEACHER_FORCES = {**ENERGY_ONLY, "forces": ("forces", "teacher_forces"), "stress": ("stress", "teacher_stress")}


class TeacherSpec(Strict):
    count: int = pydantic.Field(4, ge=1)
    model: ModelSpec | None = None
    files: list[str] = []  # saved kdframe models to use instead of training teachers
    pretrained: str | None = None  # a registered pretrained ensemble, e.g. ani1ccx
    # Teachers from files or pretrained: refit per-element energy offsets on the training split
    # (their level of theory's atomic energies differ; forces and dE are unchanged).
    align_energies: bool = True
    training: dict[str, Any] = {}

    @pydantic.model_validator(mode="after")
    def _one_source(self) -> "TeacherSpec":
        if sum((self.model is not None, bool(self.files), self.pretrained is not None)) != 1:
            raise ValueError("give exactly one of 'model' (train teachers here), 'files' (saved models) "
                             "or 'pretrained' (a registered pretrained ensemble)")
        return self


class StudentSpec(Strict):
    model: ModelSpec
    training: dict[str, Any] = {}
    weights: dict[str, Any] = {"energy": 1.0, "forces": FORCE_SCHEDULE}
    # Which training configurations the student learns on. "labelled": those with a ground-truth energy,
    # the teachers' and the control's configurations (methods.md §1: "the augmented dataset keeps the same
    # configurations"). "all": also those without one, taught by the teachers' forces alone; the control
    # cannot use them, so a student-vs-control comparison then also measures the extra configurations.
    configurations: Literal["labelled", "all"] = "labelled"


class EkdConfig(Base):
    workflow: Literal["ekd"]
    teachers: TeacherSpec
    student: StudentSpec
    control: bool = True
    compare: dict[str, list[str]] = {}  # extra table rows: name -> saved model files (an ensemble if several)
    generations: Literal[1, 2] = 1
    students_per_generation: int = pydantic.Field(4, ge=1)  # first-generation students teaching generation 2


class Ekd(Workflow):
    name = "ekd"
    Config = EkdConfig

    def model_specs(self, config: EkdConfig) -> dict[str, ModelSpec]:
        specs = {"student.model": config.student.model}
        if config.teachers.model is not None:
            specs["teachers.model"] = config.teachers.model
        return specs

    def training_blocks(self, config: EkdConfig) -> dict[str, dict[str, Any]]:
        return {"teachers.training": config.teachers.training, "student.training": config.student.training}

    def check(self, config: EkdConfig, source: str) -> None:
        super().check(config, source)
        files = {f"teachers.files[{i}]": p for i, p in enumerate(config.teachers.files)}
        for where, path in files.items():
            if not resolve_path(path, Path(source).parent).is_file():
                raise ConfigError(f"{source}: {where}", f"model file not found: {path}")
        for name in config.compare:
            compare_files(config.compare, name, Path(source).parent)
        if config.teachers.pretrained:
            registry().lookup("pretrained", config.teachers.pretrained, f"{source}: teachers.pretrained")

    def weight_blocks(self, config: EkdConfig):
        return {"student.weights": (config.student.weights, WITH_TEACHER_FORCES)}

    def run(self, run: Run, until: str = "run") -> str:
        config: EkdConfig = run.config
        if "stress" in config.student.weights and not (run.data.periodic and run.data.pbc.all(axis=1).any()):
            raise ConfigError("student.weights.stress", "data.train has no configuration periodic in all three "
                              "directions, so the teachers have no stress to teach; drop this weight")
        ensemble = self.teachers(run, config)
        models: dict[str, Potential | Ensemble] = {f"teacher {i + 1}": t for i, t in enumerate(ensemble.members)}
        models["teacher ensemble"] = ensemble
        if until == "train":
            return run.evaluate(models, "EKD teachers")
        data = self.distil(run, ensemble, "teachers")
        if until == "label":
            return f"Ensemble forces of {len(ensemble.members)} teachers cached in {run.dir / 'knowledge'}"
        n_first = config.students_per_generation if config.generations == 2 else 1
        first = [self.student(run, config, data, f"student_g1_{j + 1}" if n_first > 1 else "student", j)
                 for j in range(n_first)]
        models.update({("student" if n_first == 1 else f"student g1 #{j + 1}"): s for j, s in enumerate(first)})
        if config.generations == 2:
            second_data = self.distil(run, Ensemble(first), "students_g1")
            models["student g2"] = self.student(run, config, second_data, "student_g2", n_first)
        if config.control:
            spec = config.student
            models["control"] = run.train(
                "control", spec.model, loss_terms({"energy": spec.weights.get("energy", 1.0)}, ENERGY_ONLY, "student.weights"),
                settings(config, spec.training, "student.training"), run.data, run.splits["train"], run.splits["valid"],
                config.seed + 7, {"weights": {"energy": spec.weights.get("energy", 1.0)}})
        models.update(compared(config.compare, run.config_dir, run.device))
        return run.evaluate(models, "Ensemble knowledge distillation")

    def teachers(self, run: Run, config: EkdConfig) -> Ensemble:
        spec = config.teachers
        if spec.pretrained or spec.files:
            return self._outside_teachers(run, spec)
        pool = np.concatenate([run.splits["train"], run.splits["valid"]])
        fractions = config.data.split.fractions
        train_share = fractions["train"] / (fractions["train"] + fractions["valid"])
        teachers = []
        for i in range(spec.count):
            order = np.random.default_rng(config.seed + 1000 + i).permutation(pool)  # own data split per teacher
            cut = int(round(train_share * len(order)))
            teachers.append(run.train(
                f"teacher_{i + 1}", spec.model, loss_terms({"energy": 1.0}, ENERGY_ONLY, "teachers"),
                settings(config, spec.training, "teachers.training"), run.data, np.sort(order[:cut]),
                np.sort(order[cut:]), config.seed + 1 + i, {"weights": {"energy": 1.0}}))
        return Ensemble(teachers)

    @classmethod
    def _outside_teachers(cls, run: Run, spec: TeacherSpec) -> Ensemble:
        """Pretrained or saved teachers, checked for elements and (by default) aligned to this data's energies."""
        if spec.pretrained:
            loader = registry().lookup("pretrained", spec.pretrained, "teachers.pretrained")
            ensemble = cls._check_elements(run, loader().to(run.device), f"pretrained {spec.pretrained}",
                                           "teachers.pretrained")
        else:
            ensemble = Ensemble([cls._check_elements(run, Potential.load(resolve_path(path, run.config_dir)).to(run.device),
                                                     path, f"teachers.files[{i}]") for i, path in enumerate(spec.files)])
        if spec.align_energies:
            align_reference_energies(Teacher(ensemble, "teachers"), run.data.subset(run.splits["train"]), "energy",
                                     run.device)
        return ensemble

    @staticmethod
    def _check_elements(run: Run, model, name: str, where: str):
        """Elements outside a teacher's set are an error before any training starts."""
        missing = sorted(set(run.species) - set(model.species))
        if missing:
            raise ConfigError(where, f"{name} knows elements {model.species}, but the data also has {missing}")
        return model

    def distil(self, run: Run, ensemble: Ensemble, name: str):
        teacher = Teacher(ensemble, name)
        knowledge = {"teacher_forces": run.knowledge(EnsembleForces("teacher_forces"), teacher, run.data)}
        if "stress" in run.config.student.weights:
            knowledge["teacher_stress"] = run.knowledge(EnsembleStress("teacher_stress"), teacher, run.data)
        return run.data.with_labels(**knowledge), teacher.fingerprint()

    def student(self, run: Run, config: EkdConfig, distilled, stage: str, index: int) -> Potential:
        data, teacher_fingerprint = distilled
        spec = config.student
        train, valid = run.splits["train"], run.splits["valid"]
        if spec.configurations == "labelled":
            has_energy = data.labelled(["energy"])
            train, valid = train[has_energy[train]], valid[has_energy[valid]]
        return run.train(stage, spec.model, loss_terms(spec.weights, WITH_TEACHER_FORCES, "student.weights"),
                         settings(config, spec.training, "student.training"), data, train, valid,
                         config.seed + 100 + index,
                         {"weights": spec.weights, "teacher": teacher_fingerprint})


@hookimpl
def register_workflows(register) -> None:
    register(Ekd())
