"""The real pretrained ANI-1ccx ensemble, from YAML, teaches the EKD, atomic-energy and multi-fidelity workflows."""

import pytest
import yaml

from kdframe.cli import main
from kdframe_torchani import pretrained as pre


@pytest.fixture(scope="module")
def ani1ccx_cache(ani_wheel, tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    pre.fetch("ani1ccx", root=root, wheel=ani_wheel)
    return root


@pytest.mark.parametrize("workflow", ["ekd", "atomic", "multifidelity"])
def test_pretrained_ani1ccx_teaches(workflow, ani1ccx_cache, ani_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KDFRAME_CACHE", str(ani1ccx_cache))
    teacher = {"pretrained": "ani1ccx"}
    toy = {"architecture": "toy", "width": 4}
    raw = {"workflow": workflow, "run_dir": str(tmp_path / "run"), "device": "cpu",
           "data": {"train": {"path": str(ani_file), "energy": "morse.energy", "forces": "morse.forces"}},
           "training": {"batch_size": 16, "max_epochs": 1}}
    if workflow == "ekd":
        raw.update(teachers=teacher, student={"model": toy})
    elif workflow == "atomic":
        raw.update(teacher=teacher, students={"models": [toy]}, born_again={"enabled": False})
    else:
        raw.update(fidelities={"dft": {"energy": "morse.energy"}, "ani": {"energy": "morse.energy", "teacher": teacher}},
                   evaluate_head="dft", potential={"model": toy})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", str(tmp_path / "run.yaml"), "--quiet"]) == 0, capsys.readouterr().err
    source = {"ekd": "ensemble_forces", "atomic": "atomic_energies", "multifidelity": "ensemble_forces"}[workflow]
    assert len(list((tmp_path / "run" / "knowledge").glob(f"{source}-*.h5"))) == 1
