"""The molecular clusters of the cost and MD benchmarks: size, whole molecules, no contact under MIN_GAP."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

RUN_PY = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def benchmarks():
    spec = importlib.util.spec_from_file_location("benchmarks_run", RUN_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("n_atoms", "seed"), [(150, 2), (3000, 1)])
def test_cluster_is_whole_molecules_without_close_contacts(benchmarks, n_atoms, seed):
    atoms = benchmarks.cluster(n_atoms, seed=seed)
    assert n_atoms <= len(atoms) < n_atoms + 20
    molecule = atoms.get_tags()
    pool = {tuple(z) for z, _ in benchmarks.optimised_molecules()}
    for index in np.unique(molecule):
        assert tuple(atoms.numbers[molecule == index]) in pool
    # Every pair closer than MIN_GAP is a pair inside one molecule (all of them, not only neighbouring cells').
    close = cKDTree(atoms.positions).query_pairs(benchmarks.MIN_GAP, output_type="ndarray")
    assert len(close) > 0
    assert np.all(molecule[close[:, 0]] == molecule[close[:, 1]])
