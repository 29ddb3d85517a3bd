"""A registered pretrained ensemble labels like a QC method: ``kdframe data label --method NAME [--hessian]``."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import torch

from kdframe.cli import main
from kdframe.data import read_dataset
from kdframe.evaluation import predict
from kdframe.labeler import get_labeler
from kdframe.plugins import registry
from kdframe.potential import Ensemble, Potential
from kdframe.teacher import Teacher
from kdframe.units import HARTREE_TO_EV


def _zoo() -> Ensemble:
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(Potential(registry().architectures["toy"], {"width": 8}, [1, 6, 7, 8], ["energy"]).double())
    return Ensemble(members)


def _label(path, *extra) -> int:
    return main(["data", "label", str(path), "--method", "toyzoo", "--workers", "0", "--no-progress", *extra])


def test_energies_forces_and_hessians_of_the_ensemble_mean(ani_file, monkeypatch, capsys):
    monkeypatch.setitem(registry().pretrained, "toyzoo", _zoo)
    assert _label(ani_file) == 0 and _label(ani_file, "--hessian") == 0
    capsys.readouterr()
    assert _label(ani_file, "--hessian") == 0 and ", 0 labelled," in capsys.readouterr().out  # resumed: all done

    data = read_dataset(ani_file, {"energy": "toyzoo.energy", "forces": "toyzoo.forces"})
    expected = predict(_zoo(), data)
    assert np.allclose(data.labels["energy"], expected.energy, atol=1e-9)  # eV after reading
    assert np.allclose(data.labels["forces"], expected.forces, atol=1e-9)

    with h5py.File(ani_file) as f:
        name = next(iter(f))
        z, x = f[name]["atomic_numbers"][()], f[name]["coordinates"][()]
        hessian = f[name]["toyzoo.hessian"][0] * HARTREE_TO_EV  # eV/Å²
        assert "autograd" in f.attrs["provenance.toyzoo+hessian"]
    assert np.allclose(hessian, hessian.T)
    labeler = get_labeler("toyzoo")
    step, columns = 1e-5, []
    for k in range(x[0].size):
        plus, minus = x[0].ravel().copy(), x[0].ravel().copy()
        plus[k] += step
        minus[k] -= step
        forces = [labeler.compute(z, p.reshape(-1, 3))["forces"].ravel() * HARTREE_TO_EV for p in (plus, minus)]
        columns.append(-(forces[0] - forces[1]) / (2 * step))
    assert np.allclose(hessian, np.array(columns), atol=1e-5)


def test_an_element_the_ensemble_lacks_is_refused_before_any_work(ani_file, monkeypatch, capsys):
    monkeypatch.setitem(registry().pretrained, "toyzoo", lambda: Ensemble([
        Potential(registry().architectures["toy"], {"width": 8}, [1, 6], ["energy"]).double()]))
    for workers in ("0", "1"):
        assert main(["data", "label", str(ani_file), "--method", "toyzoo", "--workers", workers, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "--method toyzoo: labels elements [1, 6] only; molecules" in err and "water" in err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not ani_file.with_name(ani_file.name + ".labelling").exists()  # no journal: nothing was started


def test_the_labeler_travels_to_workers_without_its_model_and_records_the_weights(monkeypatch):
    monkeypatch.setitem(registry().pretrained, "toyzoo", _zoo)
    labeler = get_labeler("toyzoo")
    settings = labeler.settings()  # loads the ensemble
    assert settings["fingerprint"] == Teacher(_zoo(), "z").fingerprint()
    copy = pickle.loads(pickle.dumps(labeler))
    assert copy._teacher is None and labeler._teacher is not None
    z, x = np.array([8, 1, 1]), np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], dtype=float)
    assert copy.compute(z, x)["energy"] == labeler.compute(z, x)["energy"]
