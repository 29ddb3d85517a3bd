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


def open_box(positions: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """``(cell, origin)`` of an open configuration's box for a cell-list search: the atoms' bounding box padded by
    ``cutoff`` on every side, so it is never singular (one atom, a molecule along a Cartesian axis or in a
    Cartesian plane has a bounding box of zero volume; matscipy's default shrink-wrapped cell then is singular)."""
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    low = positions.min(axis=0) if len(positions) else np.zeros(3)
    high = positions.max(axis=0) if len(positions) else np.zeros(3)
    pad = max(float(cutoff), 1.0)
    return np.diag(high - low + 2 * pad), low - pad


def neighbour_pairs(positions: np.ndarray, cutoff: float, cell: np.ndarray | None = None,
                    pbc: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of ONE configuration (numpy in, numpy out): ``(i, j, S)``, every ordered pair within ``cutoff`` by
    matscipy's linear-scaling neighbour list, with the integer lattice shift ``S`` (n_pairs, 3)
    (vector = positions[j] - positions[i] + S @ cell). ``positions`` (n_atoms, 3) Å, ``cell`` (3, 3) rows =
    lattice vectors, ``pbc`` (3,) bool. An atom is its own neighbour only through a lattice vector. Open when
    ``pbc`` is None or all False (any number of atoms, any shape: a single atom, a molecule on an axis or in a
    plane); partly periodic cells go through :func:`regular_cell`. Needs matscipy (it comes with the hippynn and
    mace plugins; the core itself does not need it).
    """
    from matscipy.neighbours import neighbour_list

    positions = np.ascontiguousarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(positions) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros((0, 3), dtype=np.int64)
    periodic = pbc is not None and bool(np.any(pbc))
    if periodic:
        where = {"cell": regular_cell(cell, pbc, positions, cutoff), "pbc": np.asarray(pbc, dtype=bool)}
    else:
        box, origin = open_box(positions, cutoff)
        where = {"cell": box, "cell_origin": origin, "pbc": np.zeros(3, dtype=bool)}
    i, j, shifts = neighbour_list("ijS", positions=positions, cutoff=float(cutoff), **where)
    keep = (i != j) | shifts.any(axis=1)
    return i[keep], j[keep], shifts[keep]
