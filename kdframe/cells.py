"""Cells of partly periodic configurations (slabs, wires) made regular for neighbour searches."""

from __future__ import annotations

import numpy as np


def regular_cell(cell: np.ndarray, pbc: np.ndarray, positions: np.ndarray, cutoff: float) -> np.ndarray:
    """``cell`` (3, 3) with each non-periodic row replaced by a vector orthogonal to the periodic rows (and to the
    other replaced rows), longer than the atoms' extent along it plus ``cutoff``.

    The result is never singular, and no image along a replaced row comes within ``cutoff`` of an atom: it can be
    passed to a neighbour search as it is, or as fully periodic. Putting a Cartesian axis in an open row, as
    ASE-style codes do (mace's ``get_neighborhood``), makes the cell singular once that axis lies in the plane of
    the periodic vectors, e.g. a rotated slab.
    """
    pbc = np.asarray(pbc, dtype=bool)
    filled = np.array(cell, dtype=np.float64, copy=True)
    if pbc.all():
        return filled
    periodic = filled[pbc]
    basis = np.linalg.qr(periodic.T, mode="complete")[0] if len(periodic) else np.eye(3)  # periodic span first
    for column, k in enumerate(np.flatnonzero(~pbc)):
        normal = basis[:, len(periodic) + column]
        along = np.asarray(positions, dtype=np.float64) @ normal
        filled[k] = normal * (float(along.max() - along.min()) + cutoff + 1.0)
    return filled
