"""The TorchANI architecture plugin: layout, energies, derivatives, heads, persistence, pretrained ANI."""

from __future__ import annotations

import argparse
from importlib import metadata
from pathlib import Path

import pydantic
import pytest
import torch

from kdframe import derivatives
from kdframe.batch import Batch
from kdframe.errors import ConfigError, DataError
from kdframe.potential import Ensemble, Potential

torch.set_num_threads(1)

pytest.importorskip("torchani")
kdframe_torchani = pytest.importorskip("kdframe_torchani")

from kdframe_torchani import AevParameters, AniArchitecture  # noqa: E402
from kdframe_torchani import layout  # noqa: E402
from kdframe_torchani import pretrained as pre  # noqa: E402
from kdframe_torchani.model import AniModel, build_aev  # noqa: E402
from kdframe_torchani.sharing import AniEnsemble  # noqa: E402

HCO = [1, 6, 8]

# Acetamide (ase g2 "CH3CONH2"), the only one here with all four ANI-1x elements.
ACETAMIDE_Z = [8, 6, 7, 6, 1, 1, 1, 1, 1]
ACETAMIDE_R = [
    [0.424546, 1.327024, 0.008034], [0.077158, 0.149789, -0.004249], [0.985518, -0.878537, -0.048910],
    [-1.371475, -0.288665, -0.000144], [0.707952, -1.824249, 0.169942], [-1.997229, 0.584922, -0.175477],
    [-1.560842, -1.039270, -0.771686], [-1.632113, -0.723007, 0.969814], [1.953133, -0.631574, 0.111866],
]
# Energies (eV, float64, with the SAE of the files) given by torchani 2.9's own NeuroChem loader
# for the files of the torchani 2.0 wheel: member 0..7, then the 8-member mean.
PINNED = {
    "ani1x": ([-5691.491046, -5691.490121, -5691.464164, -5691.468092,
               -5691.480362, -5691.473688, -5691.454629, -5691.456250], -5691.472294),
    "ani1ccx": ([-5687.586498, -5687.629029, -5687.602135, -5687.585046,
                 -5687.586397, -5687.584584, -5687.599910, -5687.604179], -5687.597222),
}


def small_batch(dtype: torch.dtype = torch.float64) -> Batch:
    """Methanol (6 atoms) and water (3 atoms), slightly distorted."""
    positions = torch.tensor([
        [0.00, 0.00, 0.00], [1.43, 0.02, 0.00], [-0.39, 1.03, 0.05], [-0.36, -0.53, 0.88],
        [-0.37, -0.48, -0.91], [1.74, -0.90, 0.03],
        [5.00, 0.00, 0.00], [5.96, 0.05, 0.00], [4.74, 0.93, 0.10],
    ], dtype=dtype)
    species = torch.tensor([6, 8, 1, 1, 1, 1, 8, 1, 1])
    return Batch(species=species, positions=positions, conf_index=torch.tensor([0] * 6 + [1] * 3), n_conf=2)


def potential(heads=("energy",), species=HCO, seed: int = 0, **hp) -> Potential:
    torch.manual_seed(seed)
    return Potential(AniArchitecture(), {"hidden": [16, 8], "dtype": "float64", **hp}, species, heads)


def energy_of(model, positions: torch.Tensor, template: Batch, head: int = 0) -> float:
    batch = Batch(template.species, positions, template.conf_index, template.n_conf)
    return float(model(batch, forces=False)["energy"][:, head].sum().detach())


# --- plugin wiring ----------------------------------------------------------------------------
def test_entry_point_and_hooks():
    eps = {ep.name: ep.value for ep in metadata.entry_points(group="kdframe")}
    assert eps.get("torchani") == "kdframe_torchani"
    registered = []
    kdframe_torchani.register_architectures(register=registered.append)
    assert [a.name for a in registered] == ["torchani"]

    parser = argparse.ArgumentParser(prog="kdframe")
    kdframe_torchani.register_commands(subparsers=parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "fetch", "ani1ccx", "--cache", "/x"])
    assert args.name == "ani1ccx" and args.cache == Path("/x") and callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["models", "fetch", "ani3x"])


def test_hyperparameters_are_validated():
    arch = AniArchitecture()
    assert arch.parse({}).aev == "ani1x"
    with pytest.raises(pydantic.ValidationError):
        arch.parse({"hiden": [8]})
    with pytest.raises(pydantic.ValidationError):
        arch.parse({"hidden": {"Hx": [8]}})
    with pytest.raises(pydantic.ValidationError):
        arch.parse({"aev": {"radial_cutoff": 3.0, "angular_cutoff": 3.5}})
    with pytest.raises(pydantic.ValidationError):
        arch.parse({"aev": "ani3x"})
    with pytest.raises(ConfigError, match="no hidden widths for element O"):
        potential(hidden={"H": [8], "C": [8]})
    with pytest.raises(ConfigError, match="species_order"):
        potential(species_order=[1, 6, 7])


def test_presets_are_torchanis_own_aev():
    """The ``ani1x`` preset equals the AEV constants of the pretrained ANI-1x files (float32)."""
    file_constants = AevParameters(
        radial_cutoff=5.2, radial_eta=16.0, angular_cutoff=3.5, angular_eta=8.0, angular_zeta=32.0,
        radial_shifts=[0.9 + 0.26875 * i for i in range(16)], angular_shifts=[0.9, 1.55, 2.2, 2.85],
        angular_sections=[1.9634954e-01, 5.8904862e-01, 9.8174770e-01, 1.3744468e+00,
                          1.7671459e+00, 2.1598449e+00, 2.5525440e+00, 2.9452431e+00])
    preset, explicit = build_aev("ani1x", 4), build_aev(file_constants, 4)
    assert preset.out_dim == explicit.out_dim == 384
    for key, value in preset.state_dict().items():
        assert torch.allclose(value, explicit.state_dict()[key], rtol=0, atol=1e-7), key
    assert build_aev(AevParameters(), 4).out_dim == 384  # the custom block defaults to ANI-1x
    assert build_aev("ani2x", 7).out_dim == 1008


# --- layout ------------------------------------------------------------------------------------
def test_torchani_layout_round_trip():
    batch = small_batch()
    batch.positions.requires_grad_(True)
    order = [8, 1, 6]  # a non-ascending element order, as ANI-2x files have
    elem_idxs, coords = layout.to_torchani(batch, layout.index_table(order))
    assert elem_idxs.tolist() == [[2, 0, 1, 1, 1, 1], [0, 1, 1, -1, -1, -1]]
    assert torch.equal(coords[1, 3:], torch.zeros(3, 3, dtype=torch.float64))
    (grad,) = torch.autograd.grad(coords.sum(), batch.positions)
    assert torch.equal(grad, torch.ones_like(grad))  # differentiable, every atom exactly once
    back = layout.from_torchani(elem_idxs, coords, order)
    assert torch.equal(back.species, batch.species) and torch.equal(back.conf_index, batch.conf_index)
    assert torch.equal(back.positions, batch.positions) and back.n_conf == 2


def test_unknown_element_never_becomes_padding():
    table = layout.index_table(HCO)
    assert table[0] == layout.PADDING and table[16] == layout.UNKNOWN
    model = potential()
    batch = small_batch()
    batch.species[3] = 16
    with pytest.raises(DataError, match=r"elements \[16\]"):
        model.check_species(batch.species, "test batch")  # the core's check
    with pytest.raises(DataError, match=r"torchani model: elements \[16\] are outside"):
        model.net(batch)  # and the network's own, if it ever gets there


# --- energies and derivatives --------------------------------------------------------------------
def test_energy_is_sum_of_atom_energies_in_batch_order():
    model = potential(heads=("a", "b"))
    batch = small_batch()
    out = model(batch, forces=False)
    assert out["energy"].shape == (2, 2) and out["atom_energies"].shape == (9, 2)
    assert torch.allclose(batch.sum_per_conf(out["atom_energies"]), out["energy"], rtol=0, atol=1e-9)
    for conf, atoms in ((0, slice(0, 6)), (1, slice(6, 9))):  # each configuration alone
        alone = Batch(batch.species[atoms], batch.positions[atoms].detach(), torch.zeros(atoms.stop - atoms.start,
                      dtype=torch.long), 1)
        single = model(alone, forces=False)
        assert torch.allclose(single["atom_energies"], out["atom_energies"][atoms], rtol=0, atol=1e-10)
        assert torch.allclose(single["energy"][0], out["energy"][conf], rtol=0, atol=1e-10)


def test_two_heads_share_hidden_layers():
    model = potential(heads=("dft", "cc"))
    assert model.net.networks["H"].final_layer.out_features == 2
    assert model.net.networks["H"].layers[0].in_features == model.net.aev.out_dim
    out = model(small_batch())
    assert out["forces"].shape == (9, 3, 2)
    assert not torch.allclose(out["energy"][:, 0], out["energy"][:, 1])


def test_forces_equal_finite_differences():
    model = potential(heads=("a", "b"))
    batch = small_batch()
    forces = model(batch)["forces"]
    h = 1e-5
    for head in range(2):
        for atom, axis in [(0, 0), (2, 1), (5, 2), (7, 0)]:
            plus, minus = batch.positions.detach().clone(), batch.positions.detach().clone()
            plus[atom, axis] += h
            minus[atom, axis] -= h
            fd = -(energy_of(model, plus, batch, head) - energy_of(model, minus, batch, head)) / (2 * h)
            assert fd == pytest.approx(float(forces[atom, axis, head]), rel=1e-6, abs=1e-7)


def test_hessian_vector_products_equal_finite_differences_of_forces():
    model = potential()
    batch = small_batch()
    batch.positions.requires_grad_(True)
    force = model(batch, create_graph=True)["forces"][..., 0]
    v = torch.randn(batch.positions.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    hv = derivatives.hessian_vector_product(force, batch.positions, v, create_graph=False)
    h = 1e-4

    def force_at(positions: torch.Tensor) -> torch.Tensor:
        return model(Batch(batch.species, positions, batch.conf_index, 2))["forces"][..., 0].detach()

    base = batch.positions.detach()
    fd = -(force_at(base + h * v) - force_at(base - h * v)) / (2 * h)
    assert torch.allclose(hv, fd, rtol=1e-5, atol=1e-6)


def test_periodic_configurations():
    model = potential()
    water = torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]], dtype=torch.float64)
    cell = torch.eye(3, dtype=torch.float64) * 4.0
    mixed = Batch(torch.tensor([8, 1, 1, 8, 1, 1]), torch.cat([water, water]), torch.tensor([0, 0, 0, 1, 1, 1]), 2,
                  cell=torch.stack([cell, cell]), pbc=torch.tensor([[True] * 3, [False] * 3]))
    out = model(mixed)["energy"][:, 0].detach()
    free = model(Batch(mixed.species[:3], water.clone(), torch.zeros(3, dtype=torch.long), 1))["energy"][0, 0].detach()
    assert float(out[1]) == pytest.approx(float(free), abs=1e-10)  # the non-periodic one is unchanged
    assert abs(float(out[0] - free)) > 1e-6  # images within 5.2 Å do count
    shifted = water.clone()
    shifted[1] += cell[0]  # an atom moved by a lattice vector: the same crystal
    periodic = Batch(mixed.species[:3], shifted, torch.zeros(3, dtype=torch.long), 1, cell=cell[None],
                     pbc=torch.tensor([[True] * 3]))
    assert float(model(periodic)["energy"][0, 0].detach()) == pytest.approx(float(out[0]), abs=1e-9)


# --- persistence, training, ensembles ------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    model = potential(heads=("a", "b"), hidden={"H": [12], "C": [10, 6], "O": [8]}, activation="silu",
                      aev={"radial_cutoff": 4.6, "radial_num_shifts": 8, "angular_num_sections": 4})
    model.reference_energies[1] = torch.tensor([-13.6, -13.0], dtype=torch.float64)
    path = tmp_path / "ani.pt"
    model.save(path)
    loaded = Potential.load(path)
    assert loaded.architecture.name == "torchani" and loaded.heads == ["a", "b"]
    batch = small_batch()
    for key in ("energy", "atom_energies", "forces"):
        assert torch.equal(model(small_batch())[key], loaded(batch)[key]), key


def test_a_short_training_reduces_the_loss():
    torch.manual_seed(0)
    student = Potential(AniArchitecture(), {"hidden": [16, 8]}, HCO)  # float32, as trained
    batch = small_batch(torch.float32)
    target_energy = torch.tensor([-3.0, -1.0], dtype=torch.float64)
    target_forces = torch.zeros(9, 3, dtype=torch.float64)
    optimiser = torch.optim.Adam(student.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        out = student(batch, create_graph=True)
        loss = ((out["energy"][:, 0] - target_energy) ** 2).mean()
        loss = loss + ((out["forces"][..., 0] - target_forces) ** 2).mean()
        losses.append(float(loss.detach()))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert losses[2] < losses[1] < losses[0]


def test_ensemble_computes_the_aev_once(monkeypatch):
    members = [potential(seed=s) for s in range(3)]
    reference = Ensemble(members)(small_batch())
    calls = []
    original = AniModel.compute_aevs
    monkeypatch.setattr(AniModel, "compute_aevs", lambda self, *a: calls.append(1) or original(self, *a))
    shared = AniEnsemble(members)(small_batch())
    assert len(calls) == 1
    for key in ("energy", "atom_energies", "forces"):
        assert torch.allclose(shared[key], reference[key], rtol=0, atol=1e-10), key
    calls.clear()
    members[0](small_batch(), forces=False)
    members[1](small_batch(), forces=False)
    assert len(calls) == 2  # outside an AniEnsemble nothing is cached


# --- pretrained ANI-1x / ANI-1ccx -----------------------------------------------------------------
def test_load_pretrained_names_the_fetch_command(tmp_path):
    with pytest.raises(DataError, match="run `kdframe models fetch ani1ccx` first"):
        pre.load_pretrained("ani1ccx", root=tmp_path)
    with pytest.raises(ConfigError, match="unknown name"):
        pre.load_pretrained("ani9", root=tmp_path)


@pytest.mark.parametrize("name", ["ani1x", "ani1ccx"])
def test_pretrained_members_reproduce_torchani(name, ani_wheel, tmp_path):
    from kdframe.units import HARTREE_TO_EV
    from kdframe_torchani.model import neurochem

    from torchani.arch import ANI

    directory = pre.fetch(name, root=tmp_path, wheel=ani_wheel)
    assert sorted(p.name for p in directory.iterdir()) == ["manifest.json"] + [f"member_{i}.pt" for i in range(8)]
    members = pre.load_pretrained(name, root=tmp_path)
    assert len(members) == 8 and members[0].species == [1, 6, 7, 8] and members[0].heads == ["energy"]

    # torchani's own model from the same files, in float64, with the files' SAE in float64 too
    info = pre.read_info(pre.extract(ani_wheel, name, tmp_path / "neurochem"))
    aev, networks, sae, symbols = neurochem.modules_from_info(info)
    ani = ANI(symbols, aev, networks, sae, periodic_table_index=True).double()
    sae_files = pre.read_sae(info.sae)
    ani.energy_shifter.self_energies = torch.tensor([sae_files[s] for s in symbols], dtype=torch.float64)
    assert members[0].reference_energies[[1, 6, 7, 8], 0].tolist() == pytest.approx(
        [sae_files[s] * HARTREE_TO_EV for s in "HCNO"], abs=1e-9)

    species, coords = torch.tensor([ACETAMIDE_Z]), torch.tensor([ACETAMIDE_R], dtype=torch.float64)
    with torch.no_grad():
        expected = ani((species, coords), ensemble_values=True).energies[:, 0] * HARTREE_TO_EV

    def batch() -> Batch:
        return Batch(species[0], coords[0].clone(), torch.zeros(9, dtype=torch.long), 1)

    double = [m.double() for m in members]
    energies = torch.stack([m(batch(), forces=False)["energy"][0, 0] for m in double]).detach()
    assert (energies - expected).abs().max() < 1e-5
    pinned, pinned_mean = PINNED[name]
    assert energies.tolist() == pytest.approx(pinned, abs=1e-5)
    mean = AniEnsemble(double)(batch())
    mean_energy = float(mean["energy"][0, 0].detach())
    assert mean_energy == pytest.approx(float(expected.mean()), abs=1e-5)
    assert mean_energy == pytest.approx(pinned_mean, abs=1e-5)

    coords.requires_grad_(True)
    (grad,) = torch.autograd.grad(ani((species, coords)).energies.sum() * HARTREE_TO_EV, coords)
    assert torch.allclose(mean["forces"][..., 0], -grad[0], rtol=0, atol=1e-8)

    single = pre.load_pretrained(name, root=tmp_path)[0]  # float32 as stored
    assert float(single(batch(), forces=False)["energy"][0, 0].detach()) == pytest.approx(pinned[0], abs=1e-4)
