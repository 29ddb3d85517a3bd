"""Harmonic frequencies from Hessians (kdframe.frequencies) and the `freq` metric of evaluations with Hessian labels."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.data import atomic_masses
from ase.vibrations import VibrationsData
from scipy import constants

from kdframe.cli import main
from kdframe.config import BUNDLED_DIR
from kdframe.data.readers import read_dataset
from kdframe.evaluation import Predictions, evaluate, metrics_of
from kdframe.frequencies import frequency_pairs, harmonic_frequencies
from kdframe.plugins import registry
from kdframe.potential import Potential
from kdframe.report import table

HESSIAN_SET = BUNDLED_DIR / "hessian_small.h5"
KEYS = {"energy": "xtb.energy", "forces": "xtb.forces", "hessian": "xtb.hessian"}


def springs(positions: np.ndarray, bonds: list[tuple[int, int, float]]) -> np.ndarray:
    """The (3N, 3N) Hessian (eV/Å²) of harmonic springs at their rest lengths: k u uᵀ blocks per bond."""
    n = len(positions)
    h = np.zeros((n, 3, n, 3))
    for i, j, k in bonds:
        u = positions[j] - positions[i]
        block = k * np.outer(u, u) / (u @ u)
        h[i, :, i] += block
        h[j, :, j] += block
        h[i, :, j] -= block
        h[j, :, i] -= block
    return h.reshape(3 * n, 3 * n)


def test_diatomic_spring_is_sqrt_k_over_mu_in_wavenumbers():
    k = 516.0 * 1e-20 / constants.e  # HCl's force constant, 516 N/m, in eV/Å²
    species, positions = np.array([1, 17]), np.array([[0.1, -0.2, 0.3], [0.9, 0.5, 1.2]])  # an arbitrary bond axis
    mu = atomic_masses[1] * atomic_masses[17] / (atomic_masses[1] + atomic_masses[17])  # amu
    omega = np.sqrt(k * constants.e / 1e-20 / (mu * constants.atomic_mass))  # rad/s
    by_hand = omega / (2 * np.pi * constants.c * 100)  # cm-1
    freqs = harmonic_frequencies(springs(positions, [(0, 1, k)]), species, positions)
    assert freqs.shape == (1,) and by_hand == pytest.approx(2990, rel=0.01)  # HCl's harmonic wavenumber
    assert freqs[0] == pytest.approx(by_hand, rel=1e-6)


def test_rigid_motions_are_projected_out_and_ase_agrees_at_a_minimum():
    species = np.array([8, 1, 1])
    water = np.array([[0, 0, 0.1173], [0, 0.7572, -0.4692], [0, -0.7572, -0.4692]])
    hessian = springs(water, [(0, 1, 50.0), (0, 2, 50.0), (1, 2, 5.0)])
    freqs = harmonic_frequencies(hessian, species, water)
    assert freqs.shape == (3,) and (freqs > 100).all()
    ase_freqs = VibrationsData.from_2d(Atoms(numbers=species, positions=water), hessian).get_frequencies()
    np.testing.assert_allclose(freqs, np.sort(ase_freqs.real)[-3:], rtol=1e-8)  # its 6 others are ~0
    co2 = np.array([[0, 0, 0], [0, 0, 1.16], [0, 0, -1.16]])
    assert harmonic_frequencies(springs(co2, [(0, 1, 100.0), (0, 2, 100.0)]), np.array([6, 8, 8]),
                                co2).shape == (4,)  # linear: 3N - 5
    negative = harmonic_frequencies(-hessian, species, water)  # negative curvature: imaginary, shown negative
    np.testing.assert_allclose(negative, -freqs[::-1], rtol=1e-10)


def test_identical_hessians_give_zero_error_and_missing_ones_are_skipped():
    data = read_dataset(HESSIAN_SET, KEYS)
    data = data.subset(np.arange(0, len(data), 10))
    ref = data.labels["hessian"].copy()
    ref[data.atom_indices(np.array([0]))] = np.nan  # configuration 0 has no reference Hessian
    data.labels["hessian"] = ref
    pred = Predictions(data.labels["energy"], data.labels["forces"], np.nan_to_num(ref))
    metrics = metrics_of(pred, data, "energy", "forces", "hessian")
    modes = sum(3 * int(n) - 6 for n in data.n_atoms[1:])
    assert metrics.values["freq rmse (cm-1)"] == 0 and metrics.values["freq mae (cm-1)"] == 0
    assert metrics.values["freq: configurations"] == len(data) - 1 and metrics.values["freq: modes"] == modes
    ptr = np.concatenate([[0], np.cumsum(data.n_atoms)])
    reference, predicted, n_conf = frequency_pairs(ref, np.nan_to_num(ref), data.species, data.positions, ptr)
    assert n_conf == len(data) - 1 and reference.size == modes and (reference > 0).sum() > modes // 2


def test_evaluation_reports_frequencies_only_with_hessians(tmp_path, capsys):
    torch.manual_seed(0)
    model = Potential(registry().architectures["toy"], {"width": 4}, [1, 6, 7, 8]).double()
    data = read_dataset(HESSIAN_SET, KEYS)
    data = data.subset(np.arange(0, len(data), 8))
    with_h = evaluate(model, data, "energy", "forces", hessian_label="hessian")
    without = evaluate(model, data, "energy", "forces")
    assert with_h.values["freq rmse (cm-1)"] > 0 and with_h.values["freq: configurations"] == len(data)
    assert not any(k.startswith("freq") for k in without.values)
    assert "| freq rmse |" in table({"set": {"toy": with_h}})
    assert "freq" not in table({"set": {"toy": without}})

    model.save(tmp_path / "m.pt")
    argv = ["evaluate", "--model", str(tmp_path / "m.pt"), "--data", "bundled:hessian_small.h5",
            "--energy-key", "xtb.energy", "--forces-key", "xtb.forces"]
    assert main(argv + ["--hessian-key", "xtb.hessian"]) == 0
    out = capsys.readouterr().out
    assert "| H rmse | H mae | freq rmse |" in out and "Harmonic frequencies (freq): RMSE" in out
    assert "not re-optimised" in out
    assert "- freq rmse (cm-1): " in (tmp_path / "evaluation-hessian_small.md").read_text()
    assert main(argv) == 0
    assert "freq rmse" not in capsys.readouterr().out
