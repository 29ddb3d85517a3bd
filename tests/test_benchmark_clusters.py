"""The molecular boxes and clusters of the cost and MD benchmarks: size, whole molecules, no contact under MIN_GAP."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree
from repo_scripts import load_script


@pytest.fixture(scope="module")
def benchmarks():
    return load_script("benchmarks/run.py", "benchmarks_run")


@pytest.mark.parametrize(("n_atoms", "seed"), [(150, 2), (3000, 1)])
def test_open_cluster_is_whole_molecules_without_close_contacts(benchmarks, n_atoms, seed):
    atoms = benchmarks.molecular_box(n_atoms, seed=seed, periodic=False)
    assert n_atoms <= len(atoms) < n_atoms + 20
    molecule = atoms.get_tags()
    pool = {tuple(z) for z, _ in benchmarks.optimised_molecules()}
    for index in np.unique(molecule):
        assert tuple(atoms.numbers[molecule == index]) in pool
    # Every pair closer than MIN_GAP is a pair inside one molecule (all of them, not only neighbouring cells').
    close = cKDTree(atoms.positions).query_pairs(benchmarks.MIN_GAP, output_type="ndarray")
    assert len(close) > 0
    assert np.all(molecule[close[:, 0]] == molecule[close[:, 1]])


@pytest.mark.parametrize(("n_atoms", "seed"), [(200, 2), (1000, 0)])
def test_periodic_box_is_filled_without_close_contacts_through_images(benchmarks, n_atoms, seed):
    from ase.neighborlist import neighbor_list

    atoms = benchmarks.molecular_box(n_atoms, seed=seed)
    n_side = round(atoms.cell[0, 0] / benchmarks.SPACING)
    assert atoms.pbc.all() and np.allclose(atoms.cell.array, np.eye(3) * n_side * benchmarks.SPACING)
    molecule = atoms.get_tags()
    assert len(np.unique(molecule)) == n_side**3  # every grid cell holds a molecule: no void in the bulk
    assert 0.8 * n_atoms < len(atoms) < 1.25 * n_atoms
    i, j, shift = neighbor_list("ijS", atoms, benchmarks.MIN_GAP)
    crossing = shift.any(axis=1)
    assert np.all(molecule[i] == molecule[j]) and not crossing.any()  # whole molecules, images MIN_GAP away
    i, j, shift = neighbor_list("ijS", atoms, 3.0)
    assert (shift.any(axis=1) & (molecule[i] != molecule[j])).any()  # neighbours through the boundary exist
    assert 0.6 < benchmarks.density(atoms) < 1.0
