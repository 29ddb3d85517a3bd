"""The MD acceptance suite (benchmarks/md_acceptance.py, ``benchmarks/run.py md``): its measures on hand-made inputs,
and the whole suite on a toy model for a few steps."""

from __future__ import annotations

import re
import sys

import ase
import numpy as np
import pytest
import torch
from ase.calculators.calculator import Calculator, all_changes

from kdframe.errors import ConfigError
from kdframe.plugins import registry
from kdframe.potential import Potential
from repo_scripts import load_script

HIPNN = {"l_max": 0, "n_interaction_layers": 1, "width": 8, "n_atom_layers": 1, "n_sensitivities": 6,
          "dist_soft_max": 4.0, "dist_hard_max": 5.0}


@pytest.fixture(scope="module")
def run_py():
    return load_script("benchmarks/run.py", "benchmarks_run")  # puts benchmarks/ on sys.path


@pytest.fixture(scope="module")
def md(run_py):
    import md_acceptance

    return md_acceptance


class Spring(Calculator):
    """E = k/2 |r_0 - r_1|²: a spring of rest length 0 that pulls two atoms onto each other; or NaN from the start."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, k: float = 5.0, nan: bool = False):
        super().__init__()
        self.k, self.nan = k, nan

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        d = self.atoms.positions[0] - self.atoms.positions[1]
        energy = 0.5 * self.k * d @ d
        self.results = {"energy": np.nan if self.nan else energy, "forces": np.array([-self.k * d, self.k * d])}


def test_js_distance_is_zero_for_identical_and_positive_for_different_distributions(md):
    rng = np.random.default_rng(0)
    box = ase.Atoms("CH4" * 4, positions=rng.uniform(0, 8, (20, 3)), cell=np.eye(3) * 8, pbc=True,
                    tags=np.repeat(np.arange(4), 5))
    frames = [box.positions]
    same = md.pair_histograms(box, frames, 4.0, 40)
    assert set(same) == {"all", "intermolecular", "C-C", "C-H", "H-H"}
    other = md.pair_histograms(box, [box.positions * 0.9], 4.0, 40)
    for key in same:
        assert md.js_distance(same[key], same[key]) == 0
        assert md.js_distance(same[key], other[key]) > 0
    assert np.isnan(md.js_distance(np.zeros(3), np.ones(3)))
    r, g = md.rdf(same["all"], box, 1, 4.0)
    assert r.shape == g.shape == (40,) and np.all(g >= 0)


def test_energy_drift_of_a_linear_series_is_its_slope_per_atom_per_ps(md):
    times = np.arange(101) * 0.5  # fs
    energies = -100.0 + 2e-4 * times + np.random.default_rng(0).normal(0, 1e-6, times.shape)  # eV
    assert md.energy_drift(times, energies, n_atoms=4) == pytest.approx(2e-4 * 1e6 / 4, rel=1e-3)  # meV/atom/ps


def test_a_run_pulled_together_stops_at_its_failure_time(md):
    atoms = ase.Atoms("HH", positions=[[0, 0, 0], [1.5, 0, 0]], tags=[0, 0])
    run = md.nve(atoms, Spring(), dt_fs=0.5, steps=500, seed=0)
    assert run.failed_fs is not None and 0 < run.failed_fs < 250 and run.failed_fs % 0.5 == 0
    assert run.bond_collapse and np.isnan(run.drift) and run.frames == []
    assert md.nve(atoms, Spring(nan=True), 0.5, 10, 0).failed_fs == 0.0


def test_a_surviving_run_reports_drift_and_keeps_second_half_frames(md):
    atoms = ase.Atoms("HH", positions=[[0, 0, 0], [3.0, 0, 0]])
    atoms.set_tags([0, 1])
    run = md.nve(atoms, Spring(k=0.001), dt_fs=0.5, steps=20, seed=1, keep_every=5)
    assert run.failed_fs is None and np.isfinite(run.drift)
    assert len(run.frames) == 2  # steps 15 and 20


def test_pretrained_names_are_checked(md):
    with pytest.raises(ConfigError, match="no_such_model"):
        md.load_pretrained(["teacher=no_such_model"], torch.device("cpu"))


def suite(run_py, tmp_path, model: Potential, *options: str) -> str:
    """``run.py md`` with ``model`` saved twice (as 'ref' and 'student before') for a few steps; its markdown."""
    model.save(tmp_path / "model.pt")
    out = tmp_path / "md.md"
    run_py.main(["md", "--models", f"ref={tmp_path / 'model.pt'}", f"student before={tmp_path / 'model.pt'}",
                 "--reference", "ref", "--device", "cpu", "--md-atoms", "60", "--steps", "4", "--replicas", "2",
                 "--timesteps", "0.25", "0.5", "--rdf-every", "1", "--rdf-max", "4", "--speed-steps", "1",
                 "--speed-repeats", "1", "--out", str(out), *options])
    assert (tmp_path / "md.png").is_file() and (tmp_path / "md_rdf.png").is_file()
    return out.read_text()


def test_suite_on_a_toy_model_writes_every_table(run_py, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["benchmarks/run.py", "md"])
    torch.manual_seed(0)
    toy = Potential(registry().architectures["toy"], {"width": 4}, [1, 6, 7, 8])
    text = suite(run_py, tmp_path, toy, "--boundary", "open", "--gas-steps", "2",  # toy: no periodic cells
                 "--duration-fs", "1")  # 4 steps of 0.25 fs, 2 of 0.5 fs
    for header in ("## Condensed box", "## Gas phase", "## Structure", "## Speed",
                   "| model | time step (fs) | fraction failed | time to failure (fs) | bond collapses | "
                   "energy drift (meV/atom/ps) |", "| molecules with a failed run |",
                   "| model | frames | all | intermolecular | C-C |", "| model | atom-steps / s | ratio to ref |"):
        assert header in text, header
    assert re.search(r"^\| ref \| [\d,]+ \| 1\.00 \|$", text, re.M)  # the reference's speed ratio
    assert "| student before | 0.25 |" in text
    assert "10 molecules of `bundled:extensibility.h5`" in text
    assert "1 fs per run" in text


def test_suite_on_a_periodic_box_and_its_errors(run_py, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["benchmarks/run.py", "md"])
    torch.manual_seed(0)
    hipnn = Potential(registry().architectures["hippynn"], HIPNN, [1, 6, 7, 8])
    text = suite(run_py, tmp_path, hipnn, "--gas-steps", "0")
    assert "periodic (the grid is the cell)" in text and "gas phase: not run" in text
    # identical models, identical seeds: the same trajectories, JS distance 0 wherever the pair exists
    row = next(line for line in text.splitlines() if line.startswith("| student before | 4 |"))
    assert set(row.split(" | ")[2:-1]) <= {"0.0000", "—"} and "0.0000" in row
    with pytest.raises(SystemExit, match="not a model name"):
        run_py.main(["md", "--models", f"a={tmp_path / 'model.pt'}", "--reference", "b"])
    with pytest.raises(SystemExit, match="not one of --timesteps"):
        run_py.main(["md", "--models", f"a={tmp_path / 'model.pt'}", "--rdf-timestep", "3", "--timesteps", "1"])


class Pair(Calculator):
    """Two atoms on a spring of rest length ``r0``; with ``r0=None`` they repel (E = k / |d|) and fly apart."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, r0: float | None, k: float = 5.0):
        super().__init__()
        self.r0, self.k = r0, k

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        d = self.atoms.positions[1] - self.atoms.positions[0]
        r = float(np.linalg.norm(d))
        if self.r0 is None:
            energy, pull = self.k / r, -self.k / r**2  # dE/dr
        else:
            energy, pull = 0.5 * self.k * (r - self.r0) ** 2, self.k * (r - self.r0)
        force = -pull * d / r  # on atom 1
        self.results = {"energy": energy, "forces": np.array([-force, force])}


def test_curvature_md_counts_failed_broken_and_intact_runs(run_py):
    import curvature_md

    h2 = ase.Atoms("HH", positions=[[0, 0, 0], [0.74, 0, 0]])
    assert curvature_md.bonds(h2) == {(0, 1)}
    molecules = [("H2", h2)]
    intact = curvature_md.md_runs(Pair(r0=0.74), molecules, dt=0.5, steps=100, replicas=2)
    assert (intact["runs"], intact["failed"], intact["broken"], intact["lost"]) == (2, 0, 0, [])
    assert len(intact["drifts"]) == 2 and np.all(np.isfinite(intact["drifts"]))
    apart = curvature_md.md_runs(Pair(r0=None), molecules, dt=0.5, steps=100, replicas=2)
    assert (apart["failed"], apart["broken"], apart["lost"], apart["drifts"]) == (0, 2, ["H2"], [])
    collapsed = curvature_md.md_runs(Pair(r0=0.0), molecules, dt=0.5, steps=400, replicas=1)
    assert (collapsed["failed"], collapsed["broken"], len(collapsed["times"])) == (1, 0, 1)
    assert "| 1/1 | 1 |" in curvature_md.row("x", "m", 0.5, collapsed)
