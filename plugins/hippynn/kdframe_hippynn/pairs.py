"""Pair finding for the HIP-NN graph: hippynn's all-pairs search for small open systems, a cell list otherwise.

hippynn's ``OpenPairIndexer`` compares every pair of atoms of each padded configuration: the fastest choice for
batches of molecules, but O(N²) in time and memory (a 50,000-atom box holds 2.5e9 pairs) and blind to cells.
Beyond :data:`ALL_PAIRS_SLOTS` pair slots, and whenever a configuration is periodic, pairs come from matscipy's
linear-scaling cell list, one configuration at a time. Either way the pair vectors are computed here from the
graph's position input, so forces and Hessian-vector products stay exact autograd derivatives.

Periodicity travels in the cell input (n_conf, 3, 3), rows = lattice vectors: a zero row is a non-periodic
direction, so an all-zero cell is an open system (see :func:`periodic_cell`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from hippynn.graphs.indextypes import IdxType
from hippynn.graphs.nodes.base import ExpandParents, MultiNode
from hippynn.graphs.nodes.indexers import PaddingIndexer
from hippynn.graphs.nodes.inputs import CellNode, PositionsNode
from hippynn.graphs.nodes.tags import Encoder, PairIndexer
from hippynn.layers.pairs import OpenPairIndexer

from kdframe.cells import neighbour_pairs

# n_conf * max_atoms² up to which all pairs are compared (4 M slots: ~50 MB of float32 pair vectors). On one CPU
# thread all pairs beat 64 separate cell-list calls for batches of small molecules; a single 4,000-atom cluster
# (16 M slots) takes the cell list, whose search alone was 8x faster there (matscipy 1.3.1, one CPU thread).
ALL_PAIRS_SLOTS = 1 << 22


def periodic_cell(cell: torch.Tensor | None, pbc: torch.Tensor | None, n_conf: int, like: torch.Tensor) -> torch.Tensor:
    """The graph's cell input: the batch's cells with the rows of non-periodic directions set to zero."""
    if cell is None or pbc is None:
        return like.new_zeros((n_conf, 3, 3))
    return cell.to(like) * pbc.to(like).unsqueeze(-1)


def repeats_pairs(cell: torch.Tensor, cutoff: float) -> bool:
    """True when a periodic cell is less than twice ``cutoff`` wide, so one atom pair recurs through several images."""
    for rows in cell.detach().to(torch.float64):
        rows = rows[rows.abs().sum(dim=1) > 0]
        for k in range(len(rows)):
            others = torch.cat([rows[:k], rows[k + 1:]])
            width = rows[k]
            if len(others):  # the part of this lattice vector perpendicular to the other ones
                basis, _ = torch.linalg.qr(others.T)
                width = width - basis @ (basis.T @ width)
            if float(width.norm()) < 2 * cutoff:
                return True
    return False


@contextmanager
def kernels_for_repeated_pairs(repeated: bool) -> Iterator[None]:
    """hippynn's "sparse" message-passing kernels refuse pair lists that connect two atoms twice; for such batches
    use hippynn's plain-torch kernels (same sums, slower) and switch back afterwards."""
    from hippynn import custom_kernels

    active = custom_kernels.CUSTOM_KERNELS_ACTIVE
    if not repeated or active != "sparse":
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using non-standard custom kernel implementation")
        custom_kernels.set_custom_kernels("_pytorch_raw")
    try:
        yield
    finally:
        custom_kernels.set_custom_kernels(active)


class NeighbourPairs(torch.nn.Module):
    """(coordinates, nonblank, real_atoms, inv_real_atoms, mol_index, cell) -> pair_dist, pair_first, pair_second,
    pair_coord, where mol_index is the configuration of each real atom.

    ``pair_coord = r[second] - r[first] + shift`` (hippynn's open-boundary convention), both directions listed.
    """

    def __init__(self, dist_hard_max: float):
        super().__init__()
        self.cutoff = float(dist_hard_max)
        self.all_pairs = OpenPairIndexer(dist_hard_max)

    def forward(self, coordinates, nonblank, real_atoms, inv_real_atoms, mol_index, cell):
        n_conf, max_atoms = nonblank.shape
        periodic = cell.detach().abs().sum(dim=2) > 0  # (n_conf, 3)
        if not bool(periodic.any()) and n_conf * max_atoms**2 <= ALL_PAIRS_SLOTS:
            return self.all_pairs(coordinates, nonblank, real_atoms, inv_real_atoms)
        with torch.no_grad():
            first, second, shifts = self._cell_list(coordinates, nonblank, inv_real_atoms, cell, periodic)
        flat = coordinates.reshape(n_conf * max_atoms, 3)[real_atoms]
        offsets = torch.bmm(shifts.to(cell.dtype).unsqueeze(1), cell[mol_index[first]]).squeeze(1)
        pair_coord = flat[second] - flat[first] + offsets.to(flat.dtype)
        return pair_coord.norm(dim=1), first, second, pair_coord

    def _cell_list(self, coordinates, nonblank, inv_real_atoms, cell, periodic):
        """Pairs within the cutoff of every configuration, in batch atom numbering, with integer cell shifts."""
        positions = coordinates.detach().to("cpu", torch.float64).numpy()
        cells = cell.detach().to("cpu", torch.float64).numpy()
        real = nonblank.cpu().numpy()
        batch_atom = inv_real_atoms.reshape(nonblank.shape).cpu().numpy()
        firsts, seconds, shifts = [], [], []
        for c in range(real.shape[0]):
            pos = positions[c][real[c]]
            if len(pos) == 0:
                continue
            pbc = periodic[c].cpu().numpy()
            i, j, s = neighbour_pairs(pos, self.cutoff, cells[c], pbc)
            numbering = batch_atom[c][real[c]]
            firsts.append(numbering[i])
            seconds.append(numbering[j])
            shifts.append(s)
        device = coordinates.device
        if not firsts:
            empty = torch.zeros(0, dtype=torch.long, device=device)
            return empty, empty, torch.zeros((0, 3), dtype=torch.long, device=device)
        as_tensor = lambda parts: torch.from_numpy(np.concatenate(parts).astype(np.int64)).to(device)  # noqa: E731
        return as_tensor(firsts), as_tensor(seconds), as_tensor(shifts)


class NeighbourPairIndexer(ExpandParents, PairIndexer, MultiNode):
    """hippynn graph node around :class:`NeighbourPairs`; parents (positions, encoder, padding indexer, cell)."""

    _input_names = "coordinates", "nonblank", "real_atoms", "inv_real_atoms", "mol_index", "cell"

    @_parent_expander.match(PositionsNode, Encoder, PaddingIndexer, CellNode)
    def expand0(self, pos, encode, indexer, cell, **kwargs):
        return pos, encode.nonblank, indexer.real_atoms, indexer.inv_real_atoms, indexer.mol_index, cell

    _parent_expander.assertlen(6)
    _parent_expander.get_main_outputs()
    _parent_expander.require_idx_states(IdxType.MolAtom, None, None, None, None, None)

    def __init__(self, name, parents, dist_hard_max, **kwargs):
        self.dist_hard_max = dist_hard_max
        super().__init__(name, self.expand_parents(parents), module=NeighbourPairs(dist_hard_max), **kwargs)
