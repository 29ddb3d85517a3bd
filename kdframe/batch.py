"""The neutral batch every architecture consumes.

Atoms are flat and grouped by configuration: ``species[i]`` and ``positions[i]``
belong to configuration ``conf_index[i]``, and the atoms of configuration ``c``
are contiguous and come before those of ``c + 1``. Padded layouts (hippynn,
torchani) are derived views; positions stay differentiable through them, so
forces are always taken on ``Batch.positions``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import ase


@dataclass
class Padded:
    """Padded (n_conf, max_atoms) layout; padding has species 0 and position 0."""

    species: torch.Tensor  # (n_conf, max_atoms) long, 0 = no atom
    positions: torch.Tensor  # (n_conf, max_atoms, 3)
    mask: torch.Tensor  # (n_conf, max_atoms) bool, True = real atom


@dataclass
class Batch:
    species: torch.Tensor  # (n_atoms,) long atomic numbers
    positions: torch.Tensor  # (n_atoms, 3) Å
    conf_index: torch.Tensor  # (n_atoms,) long, sorted, 0..n_conf-1
    n_conf: int
    cell: torch.Tensor | None = None  # (n_conf, 3, 3) Å, rows are lattice vectors
    pbc: torch.Tensor | None = None  # (n_conf, 3) bool
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    index: torch.Tensor | None = None  # (n_conf,) identity of each configuration in its dataset (Dataset.ids)

    @property
    def n_atoms(self) -> int:
        return int(self.species.shape[0])

    def atoms_per_conf(self) -> torch.Tensor:
        return torch.bincount(self.conf_index, minlength=self.n_conf)

    def local_index(self) -> torch.Tensor:
        """Position of each atom inside its configuration (0..n_i-1)."""
        counts = self.atoms_per_conf()
        starts = torch.cumsum(counts, 0) - counts
        return torch.arange(self.n_atoms, device=self.species.device) - starts[self.conf_index]

    def to_padded(self) -> Padded:
        max_atoms = int(self.atoms_per_conf().max()) if self.n_atoms else 0
        local = self.local_index()
        species = self.species.new_zeros((self.n_conf, max_atoms))
        species[self.conf_index, local] = self.species
        positions = self.positions.new_zeros((self.n_conf, max_atoms, 3))
        positions = positions.index_put((self.conf_index, local), self.positions)
        return Padded(species=species, positions=positions, mask=species > 0)

    @classmethod
    def from_padded(cls, species: torch.Tensor, positions: torch.Tensor, **extra) -> "Batch":
        """Inverse of :meth:`to_padded`; species 0 (or negative, torchani style) marks padding."""
        mask = species > 0
        conf_index = torch.arange(species.shape[0], device=species.device)[:, None].expand_as(species)[mask]
        return cls(species=species[mask], positions=positions[mask], conf_index=conf_index,
                   n_conf=int(species.shape[0]), **extra)

    @classmethod
    def from_atoms(cls, atoms_list: Sequence["ase.Atoms"], index: Sequence[int] | None = None) -> "Batch":
        """A batch of ``ase.Atoms`` (Å); cell and pbc only when some structure is periodic."""
        periodic = any(a.pbc.any() for a in atoms_list)
        return cls(
            species=torch.cat([torch.as_tensor(a.numbers, dtype=torch.long) for a in atoms_list]),
            positions=torch.cat([torch.as_tensor(a.positions, dtype=torch.float64) for a in atoms_list]),
            conf_index=torch.cat([torch.full((len(a),), i, dtype=torch.long) for i, a in enumerate(atoms_list)]),
            n_conf=len(atoms_list),
            cell=torch.stack([torch.as_tensor(a.cell.array, dtype=torch.float64) for a in atoms_list])
            if periodic else None,
            pbc=torch.stack([torch.as_tensor(a.pbc) for a in atoms_list]) if periodic else None,
            index=None if index is None else torch.as_tensor(index, dtype=torch.long),
        )

    def sum_per_conf(self, per_atom: torch.Tensor) -> torch.Tensor:
        """Sum a per-atom tensor (n_atoms, ...) into configurations (n_conf, ...)."""
        out = per_atom.new_zeros((self.n_conf, *per_atom.shape[1:]))
        return out.index_add(0, self.conf_index, per_atom)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Batch":
        def move(t: torch.Tensor | None, floating: bool = False) -> torch.Tensor | None:
            if t is None:
                return None
            if floating and dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device)

        return replace(
            self,
            species=move(self.species),
            positions=move(self.positions, True),
            conf_index=move(self.conf_index),
            cell=move(self.cell, True),
            pbc=move(self.pbc),
            labels={k: move(v) for k, v in self.labels.items()},  # labels keep float64: energies are ~1e4 eV
            index=move(self.index),
        )


def concatenate_batches(batches: Sequence[Batch]) -> Batch:
    """One batch of the configurations of ``batches``, in order; every batch carries the same label names.
    Molecular configurations beside periodic ones get a zero cell and no periodic direction."""
    if len(batches) == 1:
        return batches[0]
    periodic = any(b.cell is not None for b in batches)

    def cells(b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        if b.cell is not None:
            return b.cell, b.pbc
        return b.positions.new_zeros((b.n_conf, 3, 3)), torch.zeros((b.n_conf, 3), dtype=torch.bool)

    offsets = torch.cumsum(torch.tensor([0] + [b.n_conf for b in batches[:-1]]), 0)
    return Batch(
        species=torch.cat([b.species for b in batches]),
        positions=torch.cat([b.positions for b in batches]),
        conf_index=torch.cat([b.conf_index + int(o) for b, o in zip(batches, offsets)]),
        n_conf=sum(b.n_conf for b in batches),
        cell=torch.cat([cells(b)[0] for b in batches]) if periodic else None,
        pbc=torch.cat([cells(b)[1] for b in batches]) if periodic else None,
        labels={name: torch.cat([b.labels[name] for b in batches]) for name in batches[0].labels},
        index=torch.cat([b.index for b in batches]) if all(b.index is not None for b in batches) else None,
    )
