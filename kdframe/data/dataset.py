"""An in-memory set of configurations with labels, batched into :class:`~kdframe.batch.Batch`."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..batch import Batch

PER_CONF, PER_ATOM = "conf", "atom"


@dataclass(frozen=True)
class LabelSpec:
    """Where a label lives: per configuration (energies) or per atom (forces, atom energies)."""

    kind: str  # PER_CONF or PER_ATOM


def atom_ranges(atom_ptr: np.ndarray, confs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the atoms of ``confs``, in that order; number of atoms of each) under ``atom_ptr``."""
    starts, lengths = atom_ptr[confs], atom_ptr[confs + 1] - atom_ptr[confs]
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    return np.arange(lengths.sum()) + offsets, lengths


class Batching:
    """What every dataset kind derives from ``batch_indices`` and ``batch``."""

    @staticmethod
    def in_batches(order: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(order), batch_size):
            yield order[start:start + batch_size]

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                labels: Sequence[str] | None = None) -> Iterator[Batch]:
        for confs in self.batch_indices(batch_size, shuffle, generator):
            yield self.batch(confs, labels)


@dataclass
class Dataset(Batching):
    """Configurations stored flat: atoms of configuration c are ``atom_ptr[c]:atom_ptr[c+1]``.

    Labels are in eV and eV/Å; NaN marks a missing label (masked in losses, never zero).
    """

    species: np.ndarray  # (A,) int64
    positions: np.ndarray  # (A, 3) float64
    atom_ptr: np.ndarray  # (C+1,) int64
    molecule: np.ndarray  # (C,) int64 index into molecule_names
    molecule_names: list[str]
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # (C,), (A,), (A, 3) or Hessians (A, 3, max_atoms, 3)
    source: str = ""
    cell: np.ndarray | None = None  # (C, 3, 3) Å, rows are lattice vectors; None when no configuration is periodic
    pbc: np.ndarray | None = None  # (C, 3) bool, with cell
    # (C,) int64 identity of each configuration, kept by subsets (default 0..C-1): ``Batch.index``, so that
    # the train and validation splits of one dataset never share an index (per-configuration caches, probes).
    ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.cell is None) != (self.pbc is None):
            raise ValueError("Dataset: cell and pbc come together")
        if self.ids is None:
            self.ids = np.arange(len(self), dtype=np.int64)
        if self.pbc is not None and not self.pbc.any():  # all open: the molecular form, one way only
            self.cell = self.pbc = None

    @property
    def periodic(self) -> bool:
        return self.pbc is not None

    def __len__(self) -> int:
        return len(self.atom_ptr) - 1

    @property
    def n_atoms(self) -> np.ndarray:
        return np.diff(self.atom_ptr)

    def label_kind(self, name: str) -> str:
        return PER_CONF if self.labels[name].shape[0] == len(self) else PER_ATOM

    def atom_indices(self, confs: np.ndarray) -> np.ndarray:
        return atom_ranges(self.atom_ptr, confs)[0]

    def elements(self) -> np.ndarray:
        """The atomic numbers present, sorted."""
        return np.unique(self.species)

    def labelled(self, names: Sequence[str]) -> np.ndarray:
        """(C,) bool: configurations with at least one of the named labels present (not NaN) on any row."""
        found = np.zeros(len(self), dtype=bool)
        conf_of_atom = np.repeat(np.arange(len(self)), self.n_atoms)
        for name in names:
            present = ~np.isnan(self.labels[name]).reshape(self.labels[name].shape[0], -1).all(axis=1)  # Hessian rows: NaN-padded
            found |= present if self.label_kind(name) == PER_CONF else np.bincount(
                conf_of_atom, weights=present, minlength=len(self)) > 0
        return found

    def subset(self, confs: Sequence[int] | np.ndarray) -> "Dataset":
        confs = np.asarray(confs, dtype=np.int64)
        atoms = self.atom_indices(confs)
        ptr = np.concatenate([[0], np.cumsum(self.n_atoms[confs])])
        labels = {k: (v[confs] if self.label_kind(k) == PER_CONF else v[atoms]) for k, v in self.labels.items()}
        return Dataset(self.species[atoms], self.positions[atoms], ptr, self.molecule[confs],
                       self.molecule_names, labels, self.source, *self._cells(confs), ids=self.ids[confs])

    def _cells(self, confs: np.ndarray | slice = slice(None)) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(cell, pbc) of ``confs`` (default: all)."""
        return (None, None) if self.pbc is None else (self.cell[confs], self.pbc[confs])

    def with_labels(self, **labels: np.ndarray) -> "Dataset":
        for name, value in labels.items():
            if value.shape[0] not in (len(self), len(self.species)):
                raise ValueError(f"label {name!r} has {value.shape[0]} rows; expected {len(self)} or {len(self.species)}")
        return Dataset(self.species, self.positions, self.atom_ptr, self.molecule, self.molecule_names,
                       {**self.labels, **labels}, self.source, *self._cells(), ids=self.ids)

    def element_counts(self) -> np.ndarray:
        """(C, max Z + 1) number of atoms of each element per configuration."""
        conf_of_atom = np.repeat(np.arange(len(self)), self.n_atoms)
        counts = np.zeros((len(self), int(self.species.max()) + 1))
        np.add.at(counts, (conf_of_atom, self.species), 1)
        return counts

    def content_hash(self, labels: Sequence[str] | None = None) -> str:
        """Hash of geometry, species and the given labels (default: all): a changed dataset never reuses a stale cache."""
        h = hashlib.sha256()
        for array in (self.species, self.positions, self.atom_ptr, *(() if self.pbc is None else (self.cell, self.pbc))):
            h.update(np.ascontiguousarray(array).tobytes())
        for name in sorted(self.labels if labels is None else labels):
            h.update(name.encode())
            h.update(np.ascontiguousarray(self.labels[name]).tobytes())
        return h.hexdigest()[:16]

    def batch(self, confs: Sequence[int] | np.ndarray, labels: Sequence[str] | None = None) -> Batch:
        confs = np.asarray(confs, dtype=np.int64)
        atoms = self.atom_indices(confs)
        counts = self.n_atoms[confs]
        names = self.labels if labels is None else labels
        batch_labels = {}
        for name in names:
            rows = confs if self.label_kind(name) == PER_CONF else atoms
            batch_labels[name] = torch.from_numpy(self.labels[name][rows])
        cell, pbc = self._cells(confs)
        return Batch(
            species=torch.from_numpy(self.species[atoms]),
            positions=torch.from_numpy(self.positions[atoms]),
            conf_index=torch.from_numpy(np.repeat(np.arange(len(confs)), counts)),
            n_conf=len(confs),
            cell=None if cell is None else torch.from_numpy(cell),
            pbc=None if pbc is None else torch.from_numpy(pbc),
            labels=batch_labels,
            index=torch.from_numpy(self.ids[confs]),
        )

    def batch_indices(self, batch_size: int, shuffle: bool = False,
                      generator: torch.Generator | None = None) -> Iterator[np.ndarray]:
        """The configurations of each batch, in order or shuffled by ``generator``."""
        order = torch.randperm(len(self), generator=generator).numpy() if shuffle else np.arange(len(self))
        return self.in_batches(order, batch_size)


def concat_labels(values: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate one label's rows; per-atom Hessian labels (n, 3, width, 3) are NaN-padded to the widest."""
    if values and values[0].ndim == 4:
        width = max(v.shape[2] for v in values)
        values = [np.pad(v, ((0, 0), (0, 0), (0, width - v.shape[2]), (0, 0)), constant_values=np.nan) for v in values]
    return np.concatenate(values)


def concatenate(datasets: Sequence[Dataset]) -> Dataset:
    """One dataset from several (molecule names are made unique by source)."""
    names: list[str] = []
    molecule, ptrs, offset = [], [np.zeros(1, dtype=np.int64)], 0
    for d in datasets:
        molecule.append(d.molecule + len(names))
        names += [f"{d.source}:{n}" if len(datasets) > 1 else n for n in d.molecule_names]
        ptrs.append(d.atom_ptr[1:] + offset)
        offset += int(d.atom_ptr[-1])
    common = set.intersection(*(set(d.labels) for d in datasets))
    periodic = any(d.periodic for d in datasets)
    return Dataset(
        np.concatenate([d.species for d in datasets]), np.concatenate([d.positions for d in datasets]),
        np.concatenate(ptrs), np.concatenate(molecule), names,
        {k: concat_labels([d.labels[k] for d in datasets]) for k in sorted(common)},
        "+".join(d.source for d in datasets),
        np.concatenate([d.cell if d.periodic else np.zeros((len(d), 3, 3)) for d in datasets]) if periodic else None,
        np.concatenate([d.pbc if d.periodic else np.zeros((len(d), 3), bool) for d in datasets]) if periodic else None,
    )
