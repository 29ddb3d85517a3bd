"""Neighbour searches for periodic configurations, slabs and wires included (shared by the plugins)."""

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


def neighbour_pairs(positions: np.ndarray, cutoff: float, cell: np.ndarray | None = None,
                    pbc: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i, j, S)``: every ordered pair within ``cutoff`` by matscipy's linear-scaling neighbour list, with the
    integer lattice shift ``S`` (vector = positions[j] - positions[i] + S @ cell). An atom is its own neighbour only
    through a lattice vector. Open when ``pbc`` is None or all False; partly periodic cells go through
    :func:`regular_cell`. matscipy comes with the hippynn and mace plugins; the core itself does not need it.
    """
    from matscipy.neighbours import neighbour_list

    periodic = pbc is not None and bool(np.any(pbc))
    where = {"cell": regular_cell(cell, pbc, positions, cutoff), "pbc": np.asarray(pbc, dtype=bool)} if periodic else {}
    i, j, shifts = neighbour_list("ijS", positions=positions, cutoff=cutoff, **where)
    keep = (i != j) | shifts.any(axis=1)
    return i[keep], j[keep], shifts[keep]
