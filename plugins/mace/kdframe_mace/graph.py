"""Neighbour graphs for a ``Batch``, optionally cached per dataset index.

Only the integer structure (edge list and periodic unit shifts) is built here and
cached; edge vectors are recomputed from ``batch.positions`` on every call so that
forces and Hessian-vector products stay exact.

A cache entry is keyed by ``Batch.index`` (the dataset's configuration ids, which subsets keep, so the
train and validation splits of one dataset never evict each other's graphs) and remembers the positions, cell and
pbc it was built from. It is reused only while no atom has moved more than
``skin / 2`` (Verlet-list rule; the graph is built with ``r_max + skin``, and MACE's
cutoff envelope is exactly zero beyond ``r_max``, so the extra edges add nothing).
With the default ``skin = 0`` that means identical positions: a configuration whose
positions changed under the same index is rebuilt, never evaluated on a stale graph.
Batches without ``index`` (ASE calculator, MD) are never cached. At most ``max_entries`` graphs
are kept (least recently used dropped), so streaming a dataset larger than memory stays bounded.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from mace.data.neighborhood import get_neighborhood

from kdframe.batch import Batch
from kdframe.cells import neighbour_pairs
from kdframe.errors import DataError


@dataclass
class Graph:
    """Edges of a whole batch: ``vector = pos[edge_index[1]] - pos[edge_index[0]] + unit_shifts @ cell``."""

    edge_index: torch.Tensor  # (2, n_edges) long, (sender, receiver) in batch atom numbering
    unit_shifts: torch.Tensor | None  # (n_edges, 3) long, None when no configuration is periodic
    edge_conf: torch.Tensor  # (n_edges,) long, configuration of each edge


@dataclass
class _Entry:
    edges: np.ndarray  # (2, n_edges) int32, local atom numbering
    unit_shifts: np.ndarray | None  # (n_edges, 3) int32, None if all zero
    positions: np.ndarray  # (n_atoms, 3) float64 the graph was built from
    cell: np.ndarray | None
    pbc: np.ndarray | None


class NeighbourGraphs:
    """Builds (and with ``cache=True`` reuses) neighbour lists within ``r_max`` for batches."""

    def __init__(self, r_max: float, skin: float = 0.0, cache: bool = True, max_entries: int = 100_000):
        self.r_max = float(r_max)
        self.skin = float(skin)
        self.cache = cache
        self.max_entries = max_entries
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self._entries.clear()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __call__(self, batch: Batch) -> Graph:
        positions = batch.positions.detach().to("cpu", torch.float64).numpy()
        counts = batch.atoms_per_conf().cpu().numpy()
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        cells = None if batch.cell is None else batch.cell.detach().to("cpu", torch.float64).numpy()
        pbcs = None if batch.pbc is None else batch.pbc.cpu().numpy().astype(bool)
        if pbcs is not None and pbcs.any() and cells is None:
            raise DataError("mace: periodic batch (pbc) without a cell")
        indices = batch.index.tolist() if (self.cache and batch.index is not None) else None

        edges, shifts, confs = [], [], []
        for c in range(batch.n_conf):
            pos = positions[starts[c] : starts[c] + counts[c]]
            cell = None if cells is None else cells[c]
            pbc = None if pbcs is None or not pbcs[c].any() else pbcs[c]
            entry = self._lookup(indices[c], pos, cell, pbc) if indices is not None else None
            if entry is None:
                entry = self._build(pos, cell, pbc)
                if indices is not None:
                    self._entries[int(indices[c])] = entry
                    self._entries.move_to_end(int(indices[c]))
                    if len(self._entries) > self.max_entries:
                        self._entries.popitem(last=False)
            edges.append(entry.edges.astype(np.int64) + starts[c])
            shifts.append(entry.unit_shifts)
            confs.append(np.full(entry.edges.shape[1], c, dtype=np.int64))

        device = batch.positions.device
        edge_index = torch.from_numpy(np.concatenate(edges, axis=1) if edges else np.zeros((2, 0), np.int64))
        unit_shifts = None
        if any(s is not None for s in shifts):
            filled = [np.zeros((e.shape[1], 3), np.int64) if s is None else s.astype(np.int64)
                      for e, s in zip(edges, shifts)]
            unit_shifts = torch.from_numpy(np.concatenate(filled)).to(device)
        edge_conf = torch.from_numpy(np.concatenate(confs) if confs else np.zeros(0, np.int64))
        return Graph(edge_index=edge_index.to(device), unit_shifts=unit_shifts, edge_conf=edge_conf.to(device))

    def _lookup(self, index: int, pos: np.ndarray, cell: np.ndarray | None, pbc: np.ndarray | None) -> _Entry | None:
        entry = self._entries.get(int(index))
        valid = (
            entry is not None
            and entry.positions.shape == pos.shape
            and _same(entry.cell, cell if pbc is not None else None)
            and _same(entry.pbc, pbc)
            and (pos.size == 0 or float(((pos - entry.positions) ** 2).sum(1).max()) <= (self.skin / 2) ** 2)
        )
        if valid:
            self.hits += 1
            self._entries.move_to_end(int(index))
            return entry
        return None

    def _build(self, pos: np.ndarray, cell: np.ndarray | None, pbc: np.ndarray | None) -> _Entry:
        self.misses += 1
        if pos.shape[0] == 0:
            empty = np.zeros((2, 0), np.int32)
            return _Entry(edges=empty, unit_shifts=None, positions=pos.copy(), cell=None, pbc=None)
        if pbc is None:
            edge_index, _, unit_shifts, _ = get_neighborhood(pos, cutoff=self.r_max + self.skin)
            unit_shifts = None
        else:
            # Not mace's get_neighborhood: it puts a Cartesian axis in each non-periodic row of the cell, which makes
            # the cell of a rotated slab singular.
            sender, receiver, unit_shifts = neighbour_pairs(pos, self.r_max + self.skin, cell, pbc)
            edge_index = np.stack((sender, receiver))
            unit_shifts = unit_shifts.astype(np.int32)
        return _Entry(
            edges=edge_index.astype(np.int32),
            unit_shifts=unit_shifts,
            positions=pos.copy(),
            cell=None if pbc is None else cell.copy(),
            pbc=None if pbc is None else pbc.copy(),
        )


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(np.array_equal(a, b))
