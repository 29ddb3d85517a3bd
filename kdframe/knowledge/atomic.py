"""Teacher per-atom energies as a per-atom target (methods.md §2), in the core's reference convention.

One convention aligns teachers and students of any two architectures: an atom energy is
``e_i = e_i^net + ref[Z_i, head]``, where ``ref`` are the per-species reference energies that
:class:`~kdframe.potential.Potential` holds (fitted by least squares on the run's training split),
so ``sum_i e_i = E`` for every architecture. The label is this total per-atom energy (eV), never
the network's own ``e_i^net``: a student whose references differ from the teacher's (another
split, another family's internal shifts, MACE's E0) still learns the same target, and a student
that matches the atom energies matches the teacher's total energies. Only the sum is physical;
the student learns the teacher's partition of it into atoms.
"""

from __future__ import annotations

import torch

from ..batch import Batch
from ..hookspecs import hookimpl
from ..teacher import Teacher
from .base import KnowledgeSource
from .ensemble import HeadSettings


class AtomicEnergies(KnowledgeSource):
    """(n_atoms,) teacher atom energies of head ``settings.head``, reference energies included."""

    name = "atomic_energies"
    Settings = HeadSettings

    def compute(self, teacher: Teacher, batch: Batch) -> torch.Tensor:
        return teacher.predict(batch, forces=False)["atom_energies"][:, self.settings.head]


@hookimpl
def register_knowledge_sources(register) -> None:
    register(AtomicEnergies)
