"""Multi-fidelity learning (methods.md §3): masking, head routing in every plugin, the workflow end to end."""

import json

import h5py
import numpy as np
import pytest
import torch
import yaml

from kdframe.cli import main
from kdframe.data.readers import read_dataset
from kdframe.plugins import registry
from kdframe.potential import Potential
from kdframe.schedule import Constant
from kdframe.training import LossTerm
from kdframe.units import HARTREE_TO_EV

HEADS = ["high", "low"]
LOW_SHIFT = {1: -0.05, 6: -0.37, 7: -0.54, 8: -0.75}  # Hartree per atom: the low level's own energy zero (plausible totals)


def _add_levels(path):
    """A 'high' level (every third energy missing) and a shifted 'low' level with forces, from the Morse labels."""
    with h5py.File(path, "a") as f:
        for group in f.values():
            z = group["atomic_numbers"][()]
            energy = group["morse.energy"][()]
            group["high.energy"] = np.where(np.arange(len(energy)) % 3 == 1, np.nan, energy)
            group["low.energy"] = 1.05 * energy + sum(LOW_SHIFT[int(a)] for a in z)
            group["low.forces"] = 1.05 * group["morse.forces"][()]
    return path


@pytest.fixture
def mf_file(ani_file):
    """The Morse file with a 'high' and a 'low' level."""
    return _add_levels(ani_file)


def _dataset(path):
    return read_dataset(path, {"high": "high.energy", "low": "low.energy", "low_forces": "low.forces"})


# --- masking -------------------------------------------------------------------------------------
def test_missing_label_contributes_nothing_never_zero(mf_file):
    data = _dataset(mf_file)
    confs = np.arange(6)
    missing = np.isnan(data.labels["high"][confs])
    assert missing.any() and not missing.all()
    torch.manual_seed(0)
    model = Potential(registry().architectures["toy"], {"width": 4}, sorted(set(data.species.tolist())), HEADS)
    term = LossTerm("energy", "high", Constant(1.0), head=0)

    def loss_and_grads(batch):
        loss = sum(term.errors(model(batch, forces=False), batch))
        return loss.detach(), torch.autograd.grad(loss, model.trainable_weights())

    full = loss_and_grads(data.batch(confs))
    present = loss_and_grads(data.batch(confs[~missing]))
    torch.testing.assert_close(full[0], present[0])
    for a, b in zip(full[1], present[1]):
        torch.testing.assert_close(a, b)
    zeroed = data.with_labels(high=np.nan_to_num(data.labels["high"]))
    assert not torch.isclose(loss_and_grads(zeroed.batch(confs))[0], full[0])


def test_a_configuration_without_labels_gives_no_loss_and_no_gradient(mf_file):
    data = _dataset(mf_file)
    model = Potential(registry().architectures["toy"], {"width": 4}, sorted(set(data.species.tolist())), HEADS)
    batch = data.batch([1])  # its high-level energy is missing
    rmse, mae = LossTerm("energy", "high", Constant(1.0)).errors(model(batch, forces=False), batch)
    assert float(rmse) == float(mae) == 0.0 and not rmse.requires_grad


# --- head routing --------------------------------------------------------------------------------
def _readouts(name, net):
    """The parameters of the per-fidelity output layers (the only non-shared ones, methods.md §3)."""
    if name == "toy":
        return list(net.readout[2].parameters())
    if name == "hippynn":
        from hippynn.layers.targets import HEnergy
        return [p for m in net.modules() if isinstance(m, HEnergy) for p in m.parameters()]
    if name == "torchani":
        return [p for n, p in net.named_parameters() if ".final_layer." in n]
    return list(net.mace.readouts.parameters())


PLUGINS = {
    "toy": {"width": 4},
    "hippynn": {"l_max": 0, "n_interaction_layers": 1, "n_atom_layers": 1, "width": 4, "n_sensitivities": 4},
    "torchani": {"hidden": [8], "dtype": "float64"},
    "mace": {"channels": 4, "max_L": 0, "num_interactions": 2, "correlation": 1, "max_ell": 1,
             "num_radial_basis": 4, "radial_MLP": [8], "MLP_irreps": "4x0e", "r_max": 4.0},
}


@pytest.mark.parametrize("name", PLUGINS)
def test_each_fidelity_moves_its_own_head_and_the_shared_layers(name, mf_file):
    if name not in registry().architectures:
        pytest.skip(f"plugin {name} not installed")
    data = _dataset(mf_file)
    torch.manual_seed(0)
    model = Potential(registry().architectures[name], PLUGINS[name], sorted(set(data.species.tolist())), HEADS)
    model.double()
    batch = data.batch(np.arange(0, len(data), 5))
    per_head = [[LossTerm("energy", "high", Constant(1.0), head=0)],
                [LossTerm("energy", "low", Constant(1.0), head=1), LossTerm("forces", "low_forces", Constant(1.0), head=1)]]
    readouts = {id(p) for p in _readouts(name, model.net)}
    params = model.trainable_weights()
    grads = []
    for terms in per_head:
        batch.positions.requires_grad_(True)
        prediction = model(batch, create_graph=True)
        loss = sum(sum(t.errors(prediction, batch)) for t in terms)
        grads.append([g if g is not None else torch.zeros_like(p)
                      for p, g in zip(params, torch.autograd.grad(loss, params, allow_unused=True))])
    own = [[g.ne(0) for p, g in zip(params, head) if id(p) in readouts] for head in grads]
    trunk = [[g.ne(0) for p, g in zip(params, head) if id(p) not in readouts] for head in grads]
    assert own[0] and trunk[0], "the test needs both output-layer and shared parameters"
    for k in range(2):
        assert any(m.any() for m in own[k]), f"fidelity {HEADS[k]} does not train its own output layer"
        assert any(m.any() for m in trunk[k]), f"fidelity {HEADS[k]} does not train the shared layers"
    # No output-layer weight is moved by both fidelities: each head's loss reaches only its own output layer.
    assert not any((a & b).any() for a, b in zip(*own))


# --- the workflow --------------------------------------------------------------------------------
def _raw(tmp_path, data) -> dict:
    return {
        "workflow": "multifidelity", "run_dir": str(tmp_path / "run"), "device": "cpu",
        "data": {"train": {"path": str(data), "energy": "high.energy", "forces": "morse.forces"},
                 "split": {"fractions": {"train": 0.7, "valid": 0.15, "test": 0.15}}},
        "training": {"batch_size": 8, "max_epochs": 3, "lr": 0.003},
        "fidelities": {"high": {"energy": "high.energy"},
                       "low": {"energy": "low.energy", "forces": "low.forces", "weights": {"energy": 1, "forces": 2}}},
        "evaluate_head": "high",
        "potential": {"model": {"architecture": "toy", "width": 4}},
    }


def _write(tmp_path, raw) -> str:
    path = tmp_path / "mf.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_multifidelity_run(tmp_path, mf_file, capsys):
    assert main(["run", _write(tmp_path, _raw(tmp_path, mf_file)), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| test | potential |" in out and "| test | potential [low] |" in out
    stage = tmp_path / "run" / "potential"
    header = (stage / "metrics.csv").read_text().splitlines()[0]
    assert "valid_rmse[energy:high.energy]" in header and "valid_rmse[forces:low.forces@1]" in header
    assert header.index("energy:high.energy") < header.index("energy:low.energy@1")  # the high head is monitored
    model = Potential.load(stage / "model.pt")
    assert model.heads == HEADS
    # One reference fit per head, on its own energies: the low level's energy zero is its own.
    ref = model.reference_energies / HARTREE_TO_EV
    for z, shift in LOW_SHIFT.items():
        assert abs(float(ref[z, 1] - 1.05 * ref[z, 0]) - shift) < 0.05


def test_single_fidelity_run_scores_its_only_head(tmp_path, mf_file, capsys):
    raw = _raw(tmp_path, mf_file)
    raw["data"]["train"].update(energy="low.energy", forces="low.forces")
    raw.update(fidelities={"low": {"energy": "low.energy", "forces": "low.forces"}}, evaluate_head="low")
    assert main(["run", _write(tmp_path, raw), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| test | potential |" in out and "[low]" not in out


@pytest.mark.parametrize("change, message", [
    ({"evaluate_head": "mp2"}, "evaluate_head: 'mp2' is not a fidelity (valid: high, low)"),
    ({"fidelities": {"high": {"energy": "high.energy", "weights": {"forces": 1}}}},
     "fidelities.high.weights.forces: this fidelity has no forces"),
    ({"fidelities": {"high": {"energy": "high.energy", "weights": {"atom_energies": 1}}}},
     "fidelities.high.weights.atom_energies: unknown loss term (valid: energy, forces)"),
    ({"fidelities": {"high": {"energy": "high.energy", "forcse": "low.forces"}}},
     "fidelities.high.forcse: unknown key (valid: energy, forces, sources, teacher, weights)"),
    ({"fidelities": {}}, "fidelities: Dictionary should have at least 1 item"),
    ({"fidelities": {"high": {"energy": "high.energy"},
                     "low": {"energy": "low.energy", "sources": {"high": {"path": "EXTRA", "energy": "low.energy",
                                                                          "share": 0.5, "weights": {"energy": 1}}}}}},
     "fidelities.low.sources.high: the name is taken by another source or a fidelity"),
    ({"fidelities": {"high": {"energy": "high.energy", "sources": {"a": {"path": "EXTRA", "energy": "high.energy",
                                                                         "share": 0.5, "weights": {"energy": 1}}}},
                     "low": {"energy": "low.energy", "sources": {"b": {"path": "EXTRA", "energy": "low.energy",
                                                                       "share": 0.5, "weights": {"energy": 1}}}}}},
     "fidelities: fidelities.high.sources.a.share 0.5 + fidelities.low.sources.b.share 0.5 = 1: leave some"),
    ({"fidelities": {"high": {"energy": "high.energy"},
                     "low": {"energy": "low.energy", "sources": {"x": {"path": "EXTRA", "labelled_by": "teachers",
                                                                       "share": 0.5, "weights": {"energy": 1}}}}}},
     "fidelities.low.sources.x.labelled_by: workflow 'multifidelity' has no teachers to label a source"),
    ({"fidelities": {"high": {"energy": "high.energy"},
                     "low": {"energy": "low.energy", "sources": {"x": {"path": "EXTRA", "energy": "low.energy",
                                                                       "share": 0.5, "weights": {"hessian": 1}}}}}},
     "fidelities.low.sources.x.weights.hessian: unknown loss term (valid: energy, forces, atom_energies, hvp)"),
])
def test_bad_fidelity_blocks_name_the_yaml_path(tmp_path, mf_file, capsys, change, message):
    from toy import write_ani_file

    write_ani_file(tmp_path / "extra.h5", seed=3)
    extra = str(_add_levels(tmp_path / "extra.h5"))
    raw = {**_raw(tmp_path, mf_file), **yaml.safe_load(yaml.safe_dump(change).replace("EXTRA", extra))}
    assert main(["run", _write(tmp_path, raw), "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_a_fidelity_can_learn_teacher_ensemble_forces(tmp_path, mf_file, capsys):
    torch.manual_seed(0)
    files = []
    for i in range(2):
        teacher = Potential(registry().architectures["toy"], {"width": 4}, [1, 6, 7, 8])
        teacher.save(tmp_path / f"teacher_{i}.pt")
        files.append(str(tmp_path / f"teacher_{i}.pt"))
    raw = _raw(tmp_path, mf_file)
    raw["fidelities"]["low"] = {"energy": "low.energy", "teacher": {"files": files}}
    assert main(["run", _write(tmp_path, raw), "--quiet"]) == 0
    assert "| test | potential [low] |" in capsys.readouterr().out
    assert len(list((tmp_path / "run" / "knowledge").glob("ensemble_forces-low.forces-*.h5"))) == 1
    header = (tmp_path / "run" / "potential" / "metrics.csv").read_text().splitlines()[0]
    assert "valid_rmse[forces:low.forces@1]" in header

    raw["fidelities"]["low"]["forces"] = "low.forces"
    assert main(["run", _write(tmp_path, raw), "--quiet"]) == 2
    assert "not both" in capsys.readouterr().err


def test_a_fidelity_trains_its_head_on_its_own_further_files(tmp_path, mf_file, capsys):
    """Three levels: 'cheap' exists only as a file of its own (a bigger set at a cheap level), routed to its head."""
    from toy import write_ani_file

    write_ani_file(tmp_path / "cheap.h5", n_conf=20, seed=3)
    with h5py.File(_add_levels(tmp_path / "cheap.h5"), "a") as f:  # a third level: the low one, rescaled
        for group in f.values():
            group["cheap.energy"], group["cheap.forces"] = 0.9 * group["low.energy"][()], 0.9 * group["low.forces"][()]
    with h5py.File(mf_file, "a") as f:  # the run's own file has a few cheap energies (its reference fit)
        for group in f.values():
            group["cheap.energy"] = 0.9 * group["low.energy"][()]
    raw = _raw(tmp_path, mf_file)
    raw["fidelities"]["cheap"] = {"energy": "cheap.energy", "sources": {
        "sampled": {"path": str(tmp_path / "cheap.h5"), "energy": "cheap.energy", "forces": "cheap.forces",
                    "share": 0.5}}}
    assert main(["run", _write(tmp_path, raw), "--quiet"]) == 0
    assert "| test | potential [cheap] |" in capsys.readouterr().out
    stage = tmp_path / "run" / "potential"
    heads = Potential.load(stage / "model.pt").heads
    assert sorted(heads) == ["cheap", "high", "low"]
    cheap = heads.index("cheap")
    assert cheap != heads.index("high")  # routed to its own head, not the evaluated one
    at = f"@{cheap}" if cheap else ""
    header = (stage / "metrics.csv").read_text().splitlines()[0]
    assert f"valid_rmse[energy:sampled.energy{at}]" in header and f"valid_rmse[forces:sampled.forces{at}]" in header
    assert f"valid_rmse[energy:cheap.energy{at}]" in header
    record = json.loads((stage / "stage.json").read_text())
    assert ["forces", "sampled.forces", cheap] in record["terms"] and "sampled" in record["sources"]


def test_source_terms_go_to_their_heads():
    from kdframe.student import Source, source_terms

    source = Source.model_construct(weights={"energy": 1.0, "forces": 2.0})
    terms = source_terms({"a": source, "b": source}, {"b": 2})
    assert [(t.label, t.head) for t in terms] == [("a.energy", 0), ("a.forces", 0), ("b.energy", 2), ("b.forces", 2)]
