import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.verlet import VelocityVerlet

from kdframe.calculator import KdframeCalculator
from kdframe.cli import main
from kdframe.errors import ConfigError, DataError
from kdframe.plugins import registry
from kdframe.potential import Ensemble, Potential

from toy import MOLECULES


def _model():
    torch.manual_seed(0)
    return Potential(registry().architectures["toy"], {"width": 8}, [1, 6, 7, 8], ["dft", "cc"]).double()


def test_calculator_matches_the_model_and_runs_md(tmp_path):
    model = _model()
    model.save(tmp_path / "m.pt")
    z, xyz = MOLECULES["methanol"]
    atoms = Atoms(numbers=z, positions=xyz)
    atoms.calc = KdframeCalculator.from_file(tmp_path / "m.pt", head="cc")
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    from kdframe.batch import Batch

    batch = Batch(torch.tensor(z), torch.tensor(xyz, dtype=torch.float64), torch.zeros(len(z), dtype=torch.long), 1)
    out = model(batch)
    assert energy == pytest.approx(float(out["energy"][0, 1]), abs=1e-5)
    assert np.allclose(forces, out["forces"][..., 1].detach().numpy(), atol=1e-5)
    assert np.allclose(atoms.get_potential_energies().sum(), energy)
    VelocityVerlet(atoms, timestep=0.5).run(3)  # positions change, results are recomputed
    assert atoms.get_potential_energy() != energy


def test_calculator_rejects_unknown_heads_and_elements():
    with pytest.raises(ConfigError, match="unknown head 'ccsd'.*valid: cc, dft"):
        KdframeCalculator(_model(), head="ccsd")
    atoms = Atoms("H2S", positions=[[0, 0, 0], [1.3, 0, 0], [0, 1.3, 0]])
    atoms.calc = KdframeCalculator(_model())
    with pytest.raises(DataError, match=r"elements \[16\] are outside this model's set \[1, 6, 7, 8\]"):
        atoms.get_potential_energy()


def _members(architecture: str, hyperparameters: dict, species: list[int], count: int = 3,
             heads: tuple[str, ...] = ("dft", "cc")) -> list[Potential]:
    members = []
    for seed in range(count):
        torch.manual_seed(seed)
        members.append(Potential(registry().architectures[architecture], hyperparameters, species, heads).double())
    return members


def _spread_of(members: list[Potential], atoms: Atoms, head: str, properties: tuple[str, ...]) -> dict:
    """Mean and population std over each member's own calculator results."""
    per_member = {p: [] for p in properties}
    for member in members:
        calc = KdframeCalculator(member, head=head)
        for p in properties:
            per_member[p].append(calc.get_property(p, atoms.copy()))
    return {p: (np.mean(v, axis=0), np.std(v, axis=0)) for p, v in per_member.items()}


def test_ensemble_calculator_gives_the_members_mean_and_spread():
    members = _members("toy", {"width": 4}, [1, 6, 7, 8])
    z, xyz = MOLECULES["methanol"]
    atoms = Atoms(numbers=z, positions=xyz)
    expected = _spread_of(members, atoms, "cc", ("energy", "forces"))
    assert expected["energy"][1] > 1e-3 and expected["forces"][1].max() > 1e-3  # the members really differ

    atoms.calc = KdframeCalculator(Ensemble(members), head="cc")
    assert {"energy_std", "forces_std"} <= set(atoms.calc.implemented_properties)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()  # energy_std comes with every calculation
    assert energy == pytest.approx(expected["energy"][0], abs=1e-10)
    np.testing.assert_allclose(forces, expected["forces"][0], rtol=0, atol=1e-10)
    assert atoms.calc.results["energy_std"] == pytest.approx(expected["energy"][1], abs=1e-10)
    assert "forces_std" not in atoms.calc.results  # one gradient per member: only when asked

    forces_std = atoms.calc.get_property("forces_std", atoms)
    assert forces_std.shape == (len(z), 3)
    np.testing.assert_allclose(forces_std, expected["forces"][1], rtol=0, atol=1e-10)
    assert atoms.calc.results["energy_std"] == pytest.approx(expected["energy"][1], abs=1e-10)
    assert atoms.calc.results["energy"] == energy  # the same forward: the same mean energy
    np.testing.assert_allclose(atoms.calc.results["forces"], forces, rtol=0, atol=1e-10)

    watched = Atoms(numbers=z, positions=xyz)
    watched.calc = KdframeCalculator(Ensemble(members), head="cc", forces_std=True)
    watched.get_forces()
    np.testing.assert_allclose(watched.calc.results["forces_std"], forces_std, rtol=0, atol=1e-12)


def test_ensemble_calculator_stress_is_the_members_mean():
    from test_stress import water_box
    from test_periodic_data import HIPNN

    members = _members("hippynn", HIPNN, [1, 8], count=2, heads=("energy",))
    atoms = water_box()
    expected = _spread_of(members, atoms, "energy", ("stress",))
    assert expected["stress"][1].max() > 1e-3  # the members really differ
    atoms.calc = KdframeCalculator(Ensemble(members))
    np.testing.assert_allclose(atoms.get_stress(), expected["stress"][0], rtol=0, atol=1e-10)
    atoms.calc.calculate(atoms, ["stress", "forces_std"])
    np.testing.assert_allclose(atoms.calc.results["stress"], expected["stress"][0], rtol=0, atol=1e-10)


def test_a_single_model_refuses_the_spread_clearly():
    z, xyz = MOLECULES["methanol"]
    atoms = Atoms(numbers=z, positions=xyz)
    atoms.calc = KdframeCalculator(_model())
    assert "energy_std" not in atoms.calc.implemented_properties
    for name in ("energy_std", "forces_std"):
        with pytest.raises(PropertyNotImplementedError, match=rf"{name} is the spread of an ensemble's members; this "
                                                              "model is a single potential"):
            atoms.calc.get_property(name, atoms)
    with pytest.raises(PropertyNotImplementedError, match="single potential"):
        KdframeCalculator(_model(), forces_std=True)
    assert np.isfinite(atoms.get_potential_energy())
    assert "energy_std" not in atoms.calc.results


def test_plugins_command_lists_the_builtin_architectures(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "kdframe-hippynn" in out and "kdframe-torchani" in out
    registered = {line.split(": ")[0]: set(line.split(": ")[1].split(", ")) for line in out.splitlines() if ": " in line}
    assert {"hippynn", "mace", "torchani", "toy"} <= registered["architectures"]
    assert {"ekd", "train"} <= registered["workflows"]


def test_saved_model_keeps_its_dtype_and_float64_reference_energies(tmp_path):
    model = _model()
    model.reference_energies[6, 0] = -1029.123456789
    model.float()
    assert model.reference_energies.dtype == torch.float64
    assert model.reference_energies[6, 0].item() == -1029.123456789
    model.save(tmp_path / "m.pt")
    loaded = Potential.load(tmp_path / "m.pt")
    assert next(loaded.net.parameters()).dtype == torch.float32
    assert loaded.reference_energies.dtype == torch.float64
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_a_plugin_that_fails_to_import_is_reported_and_skipped(monkeypatch, capsys):
    from importlib import metadata

    from kdframe import plugins

    real = metadata.entry_points(group=plugins.ENTRY_POINT_GROUP)
    broken = metadata.EntryPoint("broken_arch", "kdframe_no_such_module_xyz", plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins.metadata, "entry_points", lambda group: [*real, broken])
    monkeypatch.setenv(plugins.SELECT_ENV, "hippynn,broken_arch")
    for cached in (plugins.plugin_manager, plugins.registry):
        cached.cache_clear()
    try:
        with pytest.warns(UserWarning, match="'broken_arch' failed to load"):
            assert "hippynn" in plugins.registry().architectures
        assert main(["plugins"]) == 0
        assert "broken_arch" in capsys.readouterr().out.split("FAILED TO LOAD")[0].splitlines()[-1]
    finally:
        monkeypatch.undo()
        plugins.BROKEN.clear()
        for cached in (plugins.plugin_manager, plugins.registry):
            cached.cache_clear()


def test_output_into_a_closed_pipe_ends_without_a_traceback():
    """``kdframe ... | head`` closes stdout early: the command stops quietly, status 1, no BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "kdframe.cli", "plugins"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # before the command has started writing
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1 and "Traceback" not in err and "BrokenPipe" not in err, err


def test_config_command_prints_the_run_file_with_its_bases_merged(tmp_path, capsys):
    import yaml

    from kdframe.config import load_yaml

    (tmp_path / "base.yaml").write_text("workflow: ekd\nseed: 0\nstudent:\n"
                                        "  weights: {energy: 1, forces: &f {1: 10, 5: 1}}\n"
                                        "  sources: {s: {path: a.h5, weights: {forces: *f}}}\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nseed: 2\nstudent: {model: {architecture: toy}}\n")
    assert main(["config", str(child)]) == 0
    out = capsys.readouterr().out
    assert "extends" not in out and "&" not in out and "*" not in out  # every table written out where it is used
    assert yaml.safe_load(out) == load_yaml(child)
    assert yaml.safe_load(out)["seed"] == 2 and yaml.safe_load(out)["student"]["weights"]["forces"] == {1: 10, 5: 1}


def test_data_info_reads_a_bundled_dataset(capsys):
    assert main(["data", "info", "bundled:extensibility.h5"]) == 0
    assert "10 molecules, 112 conformations" in capsys.readouterr().out
