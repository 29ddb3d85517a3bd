"""Teacher per-atom energies as a per-atom target (methods.md §2), in the core's reference convention."""

from __future__ import annotations

import torch

from ..batch import Batch
from ..hookspecs import hookimpl
from ..teacher import Teacher
from .base import KnowledgeSource
from .ensemble import HeadSettings


class AtomicEnergies(KnowledgeSource):
    name = "atomic_energies"
    Settings = HeadSettings

    def compute(self, teacher: Teacher, batch: Batch) -> torch.Tensor:
        return teacher.predict(batch, forces=False)["atom_energies"][:, self.settings.head]


@hookimpl
def register_knowledge_sources(register) -> None:
    register(AtomicEnergies)
