"""``kdframe evaluate`` of ensembles (model files or a pretrained name), bundled data, the per-element offset refit."""

import re

import h5py
import numpy as np
import pytest
import torch

from kdframe.cli import main
from kdframe.data.readers import read_dataset
from kdframe.evaluation import evaluate, predict
from kdframe.plugins import registry
from kdframe.potential import Ensemble, Potential
from kdframe.units import EV_TO_KCAL_MOL, HARTREE_TO_EV

KEYS = ["--energy-key", "morse.energy", "--forces-key", "morse.forces"]


def _toy(seed: int) -> Potential:
    torch.manual_seed(seed)
    return Potential(registry().architectures["toy"], {"width": 8}, [1, 6, 7, 8], ["energy"]).double()


def _save_members(tmp_path, n: int = 2) -> list:
    paths = []
    for i in range(n):
        _toy(i).save(tmp_path / f"m{i}.pt")
        paths.append(tmp_path / f"m{i}.pt")
    return paths


def _value(text: str, key: str) -> float:
    match = re.search(rf"^- {re.escape(key)}: (\S+)$", text, flags=re.M)
    assert match, f"{key} not in the report"
    return float(match.group(1))


def _error(capsys, *argv) -> str:
    assert main(list(map(str, argv))) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdframe: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_ensemble_of_model_files_is_the_mean_with_its_spread(tmp_path, ani_file, capsys):
    paths = _save_members(tmp_path, 3)
    argv = ["evaluate", "--data", str(ani_file), *KEYS]
    for p in paths:
        argv += ["--model", str(p)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| morse.h5 | ensemble of 3 (m0.pt, m1.pt, m2.pt) |" in out
    report = (tmp_path / "evaluation-ensemble-morse.md").read_text()

    members = [Potential.load(p) for p in paths]
    data = read_dataset(ani_file, {"energy": "morse.energy", "forces": "morse.forces"})
    expected = evaluate(Ensemble(members), data, "energy", "forces").values
    for key in ("E rmse (eV)", "F mae (eV/Å)", "dE rmse (eV)"):
        assert _value(report, key) == pytest.approx(expected[key], rel=1e-5)
    preds = [predict(m, data) for m in members]
    energies = np.stack([p.energy for p in preds])
    forces = np.stack([p.forces for p in preds])
    spread_e = energies.std(axis=0).mean()
    spread_f = np.sqrt(((forces - forces.mean(0)) ** 2).sum(-1).mean(0)).mean()
    assert spread_e > 1e-3 and spread_f > 1e-3
    assert _value(report, "E spread (eV)") == pytest.approx(spread_e, rel=1e-5)
    assert _value(report, "F spread (kcal/mol/Å)") == pytest.approx(spread_f * EV_TO_KCAL_MOL, rel=1e-5)
    assert f"members' energy std {spread_e * EV_TO_KCAL_MOL:.3f} kcal/mol" in report
    assert f"members' force deviation {spread_f * EV_TO_KCAL_MOL:.3f} kcal/mol/Å" in report


def test_pretrained_ensemble_by_name(tmp_path, ani_file, capsys, monkeypatch):
    members = [_toy(0), _toy(1)]
    monkeypatch.setitem(registry().pretrained, "toy2", lambda: Ensemble(members))
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--pretrained", "toy2", "--data", str(ani_file), "--energy-key", "morse.energy"]) == 0
    out = capsys.readouterr().out
    assert "| morse.h5 | toy2 (2 members) |" in out and "Ensemble spread" in out
    report = (tmp_path / "evaluation-toy2-morse.md").read_text()
    data = read_dataset(ani_file, {"energy": "morse.energy"})
    assert _value(report, "E rmse (eV)") == pytest.approx(evaluate(Ensemble(members), data).values["E rmse (eV)"],
                                                          rel=1e-5)
    assert _value(report, "E spread (eV)") > 0 and "F spread (eV/Å)" not in report  # no forces asked


def test_offset_refit_removes_a_per_element_shift(tmp_path, ani_file, capsys):
    """Labels = the model's own energies + a per-element shift (another level's atomic energies) + small noise:
    raw E errors are huge, after the refit they are the noise, and conformer differences are untouched."""
    model = _toy(0)
    model.save(tmp_path / "m.pt")
    shift = {1: -0.5, 6: -38.0, 7: -54.6, 8: -75.1}  # Hartree
    rng = np.random.default_rng(1)
    data = read_dataset(ani_file, {"energy": "morse.energy"})
    predicted = predict(model, data, forces=False).energy
    with h5py.File(ani_file, "a") as f:
        start = 0
        for name in f:  # read_dataset keeps the file's group order
            z = f[name]["atomic_numbers"][()]
            n = f[name]["coordinates"].shape[0]
            noise = rng.normal(0, 1e-3, n)  # eV
            labels = predicted[start:start + n] + noise + sum(shift[int(a)] for a in z) * HARTREE_TO_EV
            f[name]["other.energy"] = labels / HARTREE_TO_EV
            start += n
    assert main(["evaluate", "--model", str(tmp_path / "m.pt"), "--data", str(ani_file), "--energy-key", "other.energy",
                 "--out", str(tmp_path / "r.md")]) == 0
    out = capsys.readouterr().out
    assert "| model | E rmse | E mae | E (offsets refit) rmse | E (offsets refit) mae |" in out
    report = (tmp_path / "r.md").read_text()
    assert "in-sample fit" in report and "4 offsets, 48 configurations" in report
    assert _value(report, "E rmse (kcal/mol)") > 1e4
    assert _value(report, "E (offsets refit) rmse (eV)") < 1.5e-3
    assert _value(report, "dE rmse (eV)") < 3e-3
    for z, hartree in shift.items():
        assert _value(report, f"offset Z={z} (eV)") == pytest.approx(hartree * HARTREE_TO_EV, abs=0.01)


def test_bundled_data(tmp_path, capsys):
    _toy(0).save(tmp_path / "m.pt")
    assert main(["evaluate", "--model", str(tmp_path / "m.pt"), "--data", "bundled:hessian_small.h5",
                 "--energy-key", "xtb.energy", "--forces-key", "xtb.forces"]) == 0
    assert "| bundled:hessian_small.h5 | m.pt |" in capsys.readouterr().out
    assert (tmp_path / "evaluation-hessian_small.md").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--pretrained", "ani9"], "--pretrained: unknown pretrained model 'ani9' (valid: "),
    (["--pretrained", "ani9", "--model", "{m}"], "evaluate: give --model or --pretrained, not both"),
    ([], "evaluate: give --model FILE (once, or several times for an ensemble) or --pretrained NAME"),
    (["--model", "{m}", "--model", "{tmp}/absent.pt"], "absent.pt: model file not found"),
    (["--model", "{m}", "--out", "{tmp}"], "is a directory; give the markdown file to write"),
    (["--model", "{m}", "--data", "bundled:nope.h5"], "--data: no bundled dataset 'bundled:nope.h5' (valid: "
                                                       "bundled:extensibility.h5, bundled:hessian_small.h5"),
])
def test_bad_inputs_give_one_line(tmp_path, ani_file, capsys, argv, message):
    _toy(0).save(tmp_path / "m.pt")
    argv = [a.format(m=tmp_path / "m.pt", tmp=tmp_path) for a in argv]
    if "--data" not in argv:
        argv += ["--data", str(ani_file)]
    err = _error(capsys, "evaluate", *argv, "--energy-key", "morse.energy")
    assert message in err
    if "unknown pretrained" in message:
        assert "ani1ccx" in err and "ani2x" in err


def test_conformer_pairs_stay_within_a_molecule_and_skip_missing_and_high_conformers():
    from kdframe.data.dataset import Dataset
    from kdframe.evaluation import CONFORMER_WINDOW_KCAL_MOL, conformer_pair_indices, conformer_pairs

    n = 6  # one H atom each: only the molecule index and the energies matter here
    data = Dataset(species=np.ones(n, dtype=np.int64), positions=np.zeros((n, 3)), atom_ptr=np.arange(n + 1),
                   molecule=np.array([0, 0, 0, 0, 1, 1]), molecule_names=["a", "b"])
    high = 2 * CONFORMER_WINDOW_KCAL_MOL / EV_TO_KCAL_MOL
    reference = np.array([0.0, 0.1, np.nan, high, 0.3, 0.0])
    i, j = conformer_pair_indices(data, reference)
    assert list(zip(i, j)) == [(0, 1), (4, 5)]
    predicted = np.array([1.0, 1.3, 0.0, 0.0, 2.0, 1.5])
    assert np.allclose(conformer_pairs(data, reference, predicted), ([-0.1, 0.3], [-0.3, 0.5]))
