import numpy as np
import pytest
import torch
from ase import Atoms
from ase.md.verlet import VelocityVerlet

from kdframe.calculator import KdframeCalculator
from kdframe.cli import main
from kdframe.errors import ConfigError, DataError
from kdframe.plugins import registry
from kdframe.potential import Potential

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
