"""Ensemble-averaged forces (EKD, methods.md §1): F̄ = (1/k) Σ_T F^(T), by autograd of the mean energy; on
periodic data also the ensemble-averaged stress, by autograd of the mean energy in a strain."""

from __future__ import annotations

import pydantic
import torch

from ..batch import Batch
from ..hookspecs import hookimpl
from ..teacher import Teacher
from .base import KnowledgeSource


class HeadSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    head: int = 0


class EnsembleForces(KnowledgeSource):
    name = "ensemble_forces"
    Settings = HeadSettings

    def compute(self, teacher: Teacher, batch: Batch) -> torch.Tensor:
        forces = teacher.predict(batch, forces=True)["forces"]
        return forces[..., self.settings.head]


class EnsembleStress(KnowledgeSource):
    """(n_conf, 3, 3) eV/Å³; NaN for configurations not periodic in 3D (no volume: no label)."""

    name = "ensemble_stress"
    Settings = HeadSettings

    def compute(self, teacher: Teacher, batch: Batch) -> torch.Tensor:
        return teacher.predict(batch, forces=False, stress=True)["stress"][..., self.settings.head]


@hookimpl
def register_knowledge_sources(register) -> None:
    register(EnsembleForces)
    register(EnsembleStress)
