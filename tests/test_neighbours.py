"""kdframe.cells.neighbour_pairs on configurations whose bounding box has no volume (one atom, a molecule on a
Cartesian axis or in a Cartesian plane) and on a periodic box holding an isolated atom: the same pairs as a
brute-force search, never a singular cell. The same geometries through every built-in plugin are the
conformance kit's ``awkward_geometries`` check (tests/test_conformance.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("matscipy")

from kdframe.cells import neighbour_pairs, regular_cell  # noqa: E402


def brute_force(positions, cutoff, cell=None, pbc=None, reach=2):
    """Every ordered pair (i, j, S) within cutoff, images up to ``reach`` cells away along periodic directions."""
    positions = np.asarray(positions, dtype=np.float64)
    periodic = np.zeros(3, bool) if pbc is None else np.asarray(pbc, bool)
    ranges = [range(-reach, reach + 1) if p else range(1) for p in periodic]
    found = set()
    for shift in itertools.product(*ranges):
        offset = np.asarray(shift, dtype=np.float64) @ cell if any(shift) else np.zeros(3)
        for i, j in itertools.product(range(len(positions)), repeat=2):
            if i == j and not any(shift):
                continue
            if np.linalg.norm(positions[j] - positions[i] + offset) < cutoff:
                found.add((i, j, *shift))
    return found


def as_set(i, j, s):
    return {(int(a), int(b), *map(int, c)) for a, b, c in zip(i, j, s)}


OPEN = {
    "single atom": [[0.3, -1.2, 4.0]],
    "CO along x": [[0.0, 0.0, 0.0], [1.128, 0.0, 0.0]],
    "CO2 along y, off the origin": [[5.0, -1.16, 2.0], [5.0, 0.0, 2.0], [5.0, 1.16, 2.0]],
    "HCN along z": [[0.0, 0.0, -1.63], [0.0, 0.0, -0.57], [0.0, 0.0, 0.58]],
    "water in the xy plane": [[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]],
    "formaldehyde in the yz plane": [[0.0, 0.0, 0.0], [0.0, 0.0, 1.21], [0.0, 0.94, -0.54], [0.0, -0.94, -0.54]],
    "two far-apart atoms on x": [[-30.0, 0.0, 0.0], [30.0, 0.0, 0.0]],
}


@pytest.mark.parametrize("name", list(OPEN))
@pytest.mark.parametrize("pbc", [None, [False, False, False]])
def test_open_configurations_without_volume(name, pbc):
    positions = np.array(OPEN[name])
    i, j, s = neighbour_pairs(positions, 5.0, None if pbc is None else np.zeros((3, 3)), pbc)
    assert as_set(i, j, s) == brute_force(positions, 5.0)
    assert s.shape == (len(i), 3)


def test_no_atoms():
    i, j, s = neighbour_pairs(np.zeros((0, 3)), 5.0)
    assert len(i) == len(j) == len(s) == 0 and s.shape == (0, 3)


@pytest.mark.parametrize("pbc", [[True, True, True], [True, True, False], [True, False, False]])
def test_periodic_box_with_an_isolated_atom(pbc):
    """Water and an H atom far from it in a periodic box; and the H atom alone in the box (it meets only its
    images, here none within the cutoff of 3 Å in a 7 Å box, then several in a 2.5 Å one)."""
    cell = np.diag([7.0, 7.0, 7.0])
    water = [[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]
    positions = np.array(water + [[3.5, 3.5, 3.5]])
    i, j, s = neighbour_pairs(positions, 3.0, cell, pbc)
    assert as_set(i, j, s) == brute_force(positions, 3.0, regular_cell(cell, pbc, positions, 3.0), pbc)
    alone = np.array([[3.5, 3.5, 3.5]])
    assert len(neighbour_pairs(alone, 3.0, cell, pbc)[0]) == 0
    small = np.diag([2.5, 2.5, 2.5])
    i, j, s = neighbour_pairs(alone, 3.0, small, pbc)
    assert as_set(i, j, s) == brute_force(alone, 3.0, small, pbc)
    assert len(i) == 2 * sum(pbc)  # the nearest images, one on each side along each periodic direction
