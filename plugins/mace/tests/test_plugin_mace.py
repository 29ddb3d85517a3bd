"""The MACE architecture plugin (plugins/mace): physics, heads, graph cache, persistence, training."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

kdframe_mace = pytest.importorskip("kdframe_mace")
kdframe_mace.architecture.import_mace()  # mace before e3nn, and quietly

import ase  # noqa: E402
import ase.build  # noqa: E402
import pydantic  # noqa: E402

from kdframe import derivatives  # noqa: E402
from kdframe.batch import Batch  # noqa: E402
from kdframe.errors import ConfigError  # noqa: E402
from kdframe.plugins import registry  # noqa: E402
from kdframe.potential import Potential  # noqa: E402
from kdframe_mace import MaceArchitecture  # noqa: E402

torch.set_num_threads(1)

SPECIES = [1, 6, 7, 8]
HEADS = ["dft", "cc"]
# Two interactions, so the last readout is MACE's non-linear, head-masked one.
SMALL = dict(channels=8, max_L=1, num_interactions=2, correlation=2, max_ell=2,
             num_radial_basis=6, radial_MLP=[16], MLP_irreps="8x0e", r_max=4.0, dtype="float64")
MOLECULES = ["H2O", "CH4", "NH3", "CH3OH", "C2H4", "HCOOH"]


def molecules(seed: int = 0, names: list[str] = MOLECULES) -> list[ase.Atoms]:
    rng = torch.Generator().manual_seed(seed)
    out = []
    for name in names:
        atoms = ase.build.molecule(name)
        atoms.positions += 0.05 * torch.randn(len(atoms), 3, generator=rng, dtype=torch.float64).numpy()
        out.append(atoms)
    return out


def fresh(batch: Batch, positions: torch.Tensor | None = None) -> Batch:
    """The same batch with new, grad-free positions (Potential.forward marks positions in place)."""
    pos = batch.positions if positions is None else positions
    return dataclasses.replace(batch, positions=pos.detach().clone())


def make_potential(**overrides) -> Potential:
    torch.manual_seed(0)
    return Potential(MaceArchitecture(), {**SMALL, **overrides}, SPECIES, HEADS)


@pytest.fixture(scope="module")
def potential() -> Potential:
    return make_potential()


@pytest.fixture(scope="module")
def uncached(potential) -> Potential:
    """The same weights without the graph cache."""
    model = make_potential(cache_graphs=False)
    model.load_state_dict(potential.state_dict())
    return model


@pytest.fixture
def batch() -> Batch:
    return Batch.from_atoms(molecules(), index=list(range(100, 100 + len(MOLECULES))))


# --- energies and heads -------------------------------------------------------------------------
def test_energy_is_sum_of_atom_energies(potential, batch):
    out = potential.net(batch)
    assert out.energy.shape == (batch.n_conf, len(HEADS))
    assert out.atom_energies.shape == (batch.n_atoms, len(HEADS))
    assert out.energy.dtype == torch.float64
    torch.testing.assert_close(out.energy, batch.sum_per_conf(out.atom_energies), rtol=0, atol=1e-12)


def test_all_heads_match_mace_forward_head_by_head(potential, batch):
    out = potential.net(batch)
    for h, head in enumerate(HEADS):
        torch.testing.assert_close(out.atom_energies[:, h], potential.net.mace_node_energy(batch, head),
                                   rtol=0, atol=1e-12)


def test_heads_share_interactions_but_differ(potential, batch):
    net = potential.net
    out = net(batch)
    assert (out.energy[:, 0] - out.energy[:, 1]).abs().min() > 1e-6
    shared = list(net.mace.interactions[0].parameters())
    for h in range(len(HEADS)):
        grads = torch.autograd.grad(out.energy[:, h].sum(), shared, retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"head {h} does not use the interactions"
    assert len(net.mace.interactions) == SMALL["num_interactions"]  # one stack, not one per head


def test_unknown_head_is_an_error_never_another_head(potential, batch):
    with pytest.raises(ConfigError, match="unknown head 'ccsd'"):
        potential.head_index("ccsd")
    with pytest.raises(ConfigError, match="unknown head 'ccsd'"):
        potential.net.head_index("ccsd")
    with pytest.raises(ConfigError, match="unknown head 'ccsd'"):
        potential.net.mace_inputs(batch, "ccsd")
    assert potential.net.head_index("cc") == 1


def test_unknown_element_is_an_error(potential, batch):
    batch.species[0] = 9
    with pytest.raises(Exception, match=r"\[9\]"):
        potential.net(batch)


# --- derivatives --------------------------------------------------------------------------------
def test_forces_match_finite_differences(potential):
    batch = Batch.from_atoms(molecules(names=["H2O", "NH3"]))
    forces = potential(fresh(batch))["forces"]  # (n_atoms, 3, n_heads)
    eps = 1e-5
    fd = torch.zeros_like(forces)
    for i in range(batch.n_atoms):
        for k in range(3):
            plus, minus = batch.positions.clone(), batch.positions.clone()
            plus[i, k] += eps
            minus[i, k] -= eps
            e_plus = potential(fresh(batch, plus), forces=False)["energy"].sum(0)
            e_minus = potential(fresh(batch, minus), forces=False)["energy"].sum(0)
            fd[i, k] = -(e_plus - e_minus) / (2 * eps)
    torch.testing.assert_close(forces, fd, rtol=1e-6, atol=1e-7)


def test_hessian_vector_products_match_finite_differences_of_forces(potential):
    batch = Batch.from_atoms(molecules(names=["CH3OH"]))
    v = torch.randn(batch.n_atoms, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    eps = 1e-5
    f_plus = potential(fresh(batch, batch.positions + eps * v))["forces"]
    f_minus = potential(fresh(batch, batch.positions - eps * v))["forces"]
    for h in range(len(HEADS)):
        b = fresh(batch)
        force = potential(b, create_graph=True)["forces"][..., h]
        hv = derivatives.hessian_vector_product(force, b.positions, v, create_graph=False)
        torch.testing.assert_close(hv, -(f_plus[..., h] - f_minus[..., h]) / (2 * eps), rtol=1e-5, atol=1e-6)


# --- symmetries ---------------------------------------------------------------------------------
def test_rotation_translation_permutation_invariance(potential, batch):
    ref = potential(fresh(batch))
    rotation, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    moved = potential(fresh(batch, batch.positions @ rotation.T + torch.tensor([1.5, -2.0, 0.7], dtype=torch.float64)))
    torch.testing.assert_close(moved["energy"], ref["energy"], rtol=0, atol=1e-10)
    torch.testing.assert_close(moved["forces"], torch.einsum("ij,njh->nih", rotation, ref["forces"]),
                               rtol=0, atol=1e-10)
    # permute atoms inside every configuration (configurations stay contiguous)
    starts = torch.cumsum(batch.atoms_per_conf(), 0) - batch.atoms_per_conf()
    perm = torch.cat([s + torch.randperm(int(n), generator=torch.Generator().manual_seed(7))
                      for s, n in zip(starts.tolist(), batch.atoms_per_conf().tolist())])
    permuted = dataclasses.replace(batch, species=batch.species[perm], positions=batch.positions[perm].clone())
    out = potential(permuted)
    torch.testing.assert_close(out["energy"], ref["energy"], rtol=0, atol=1e-10)
    torch.testing.assert_close(out["atom_energies"], ref["atom_energies"][perm], rtol=0, atol=1e-10)
    torch.testing.assert_close(out["forces"], ref["forces"][perm], rtol=0, atol=1e-10)


# --- graph cache --------------------------------------------------------------------------------
def test_graph_cache_is_exact_and_invalidated_when_positions_change(potential, uncached, batch):
    graphs = potential.net.graphs
    graphs.clear()
    first, second = potential(fresh(batch)), potential(fresh(batch))
    assert (graphs.misses, graphs.hits, len(graphs)) == (batch.n_conf, batch.n_conf, batch.n_conf)
    plain = uncached(fresh(batch))
    assert len(uncached.net.graphs) == 0
    for key in ("energy", "atom_energies", "forces"):
        assert torch.equal(first[key], plain[key]) and torch.equal(second[key], plain[key])
    # same dataset indices, moved atoms (e.g. another split reusing indices): rebuilt, never stale
    moved = batch.positions * 1.3
    out = potential(fresh(batch, moved))
    assert graphs.misses == 2 * batch.n_conf
    assert torch.equal(out["forces"], uncached(fresh(batch, moved))["forces"])
    # no dataset index (ASE / MD): never cached
    potential(dataclasses.replace(fresh(batch), index=None))
    assert len(graphs) == batch.n_conf and graphs.misses == 3 * batch.n_conf


def test_graph_skin_reuses_graphs_for_small_moves_exactly(potential, uncached, monkeypatch):
    from kdframe_mace.graph import NeighbourGraphs

    monkeypatch.setattr(potential.net, "graphs", NeighbourGraphs(SMALL["r_max"], skin=0.6, cache=True))
    batch = Batch.from_atoms(molecules(), index=list(range(len(MOLECULES))))
    potential(fresh(batch), forces=False)
    # every atom moves less than skin / 2 = 0.3 Å
    shake = 0.1 * torch.randn(batch.n_atoms, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    moved = batch.positions + shake.clamp(-0.17, 0.17)
    out = potential(fresh(batch, moved))
    assert potential.net.graphs.hits == batch.n_conf
    ref = uncached(fresh(batch, moved))
    torch.testing.assert_close(out["energy"], ref["energy"], rtol=0, atol=1e-12)
    torch.testing.assert_close(out["forces"], ref["forces"], rtol=0, atol=1e-12)
    potential(fresh(batch, batch.positions + 0.2), forces=False)  # 0.35 Å: rebuilt
    assert potential.net.graphs.misses == 2 * batch.n_conf


# --- ASE structures, periodic ones included ------------------------------------------------------
def test_ase_atoms_batch_matches_mace_data_pipeline(potential):
    from mace import data as mace_data
    from mace.tools import AtomicNumberTable, torch_geometric

    bulk = ase.build.bulk("C", "diamond", a=3.57) * (2, 1, 1)
    bulk.rattle(0.05, seed=1)
    slab = ase.build.molecule("CH3OH", vacuum=3.0)
    slab.pbc = (True, True, False)
    structures = [ase.build.molecule("C2H4"), bulk, slab]
    batch = Batch.from_atoms(structures)
    out = potential(fresh(batch))
    assert out["forces"].shape == (batch.n_atoms, 3, len(HEADS))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # mace's data pipeline builds tensors in the default dtype
    try:
        for h, head in enumerate(HEADS):
            configs = [mace_data.config_from_atoms(a, head_name=head) for a in structures]
            data = [mace_data.AtomicData.from_config(c, z_table=AtomicNumberTable(SPECIES), cutoff=SMALL["r_max"],
                                                     heads=HEADS) for c in configs]
            mace_batch = next(iter(torch_geometric.dataloader.DataLoader(data, batch_size=len(data)))).to_dict()
            reference = potential.net.mace(mace_batch, compute_force=False)["energy"]
            torch.testing.assert_close(out["energy"][:, h], reference, rtol=0, atol=1e-10)
    finally:
        torch.set_default_dtype(previous)
    # a periodic image is the same structure
    wrapped = batch.positions.clone()
    wrapped[len(structures[0])] += batch.cell[1, 0]
    torch.testing.assert_close(potential(fresh(batch, wrapped))["energy"], out["energy"], rtol=0, atol=1e-10)


def test_ase_calculator_drives_the_mace_potential(potential):
    from kdframe.calculator import KdframeCalculator

    atoms = ase.build.bulk("C", "diamond", a=3.57) * (2, 1, 1)
    atoms.rattle(0.05, seed=2)
    atoms.calc = KdframeCalculator(potential, head="cc")
    n_cached = len(potential.net.graphs)
    for step in range(2):  # MD-like: positions change under no dataset index, so nothing is cached
        out = potential(Batch.from_atoms([atoms]))
        assert atoms.get_potential_energy() == pytest.approx(out["energy"][0, 1].item(), abs=1e-10)
        assert abs(atoms.get_forces() - out["forces"][..., 1].detach().numpy()).max() < 1e-10
        atoms.positions += 0.02 * (step + 1)
    assert len(potential.net.graphs) == n_cached
    with pytest.raises(ConfigError, match="unknown head"):
        KdframeCalculator(potential, head="ccsd")


def test_saved_mace_model_gives_kdframes_predictions_in_mace_calculator(tmp_path):
    """``save_mace_model`` writes a file mace's own calculator loads: every head gives kdframe's energy (reference
    energies included, as mace's E0s), forces and stress, on a periodic box and on a molecule."""
    from calculators import assert_same_predictions
    from mace.calculators import MACECalculator

    from kdframe_mace import save_mace_model

    model = make_potential()
    model.reference_energies[SPECIES] = torch.tensor([[-13.6, -13.0], [-1029.0, -1027.5], [-1484.0, -1483.0],
                                                      [-2041.0, -2040.0]], dtype=torch.float64)
    path = save_mace_model(model, tmp_path / "student.model")
    box = ase.build.bulk("C", "diamond", a=3.57) * (2, 1, 1)
    box.rattle(0.05, seed=2)
    for head in HEADS:
        theirs = MACECalculator(model_paths=str(path), device="cpu", default_dtype="float64", head=head)
        assert_same_predictions(theirs, model, head, [box, molecules(names=["CH3OH"])[0]])
    assert abs(box.get_potential_energy()) > 1000  # the reference energies are in
    with pytest.raises(ConfigError, match="only mace models export"):
        save_mace_model(Potential(registry().architectures["toy"], {}, SPECIES), tmp_path / "toy.model")


def test_a_float32_model_exports_its_reference_energies_in_float64(tmp_path):
    """Reference energies with more digits than float32 holds survive export (a float32 file would be 5e-5 eV off
    per carbon atom: 2.8 meV on this box)."""
    from mace.calculators import MACECalculator

    from kdframe.calculator import KdframeCalculator
    from kdframe_mace import save_mace_model

    model = make_potential(dtype="float32")
    model.reference_energies[SPECIES, 0] = torch.tensor([-13.6123456789, -1029.2345678901, -1484.3456789012,
                                                         -2041.4567890123], dtype=torch.float64)
    box = ase.build.bulk("C", "diamond", a=3.57) * (3, 3, 3)
    box.rattle(0.05, seed=1)
    ours = KdframeCalculator(model).get_potential_energy(box)
    theirs = MACECalculator(model_paths=str(save_mace_model(model, tmp_path / "f32.model")), device="cpu",
                            default_dtype="float64", head=HEADS[0]).get_potential_energy(box)
    assert abs(theirs - ours) < 5e-4, theirs - ours


# --- hyperparameters, dtype, persistence, training -----------------------------------------------
def test_hyperparameter_typo_names_the_key():
    arch = MaceArchitecture()
    with pytest.raises(pydantic.ValidationError, match="chanels"):
        arch.parse({"chanels": 8})
    with pytest.raises(pydantic.ValidationError, match="max_L"):
        arch.parse({"max_L": 3})
    with pytest.raises(pydantic.ValidationError, match="dtype"):
        arch.parse({"dtype": "float16"})
    assert arch.parse({"max_L": 2}).hidden_irreps() == "32x0e + 32x1o + 32x2e"


@pytest.mark.parametrize("key", ["cuequivariance", "reduced_cg"])
def test_cuequivariance_options_fail_clearly_without_the_package(key, monkeypatch):
    monkeypatch.setitem(sys.modules, "cuequivariance_torch", None)  # import now raises ImportError
    with pytest.raises(ConfigError, match=f"model.{key}.*not installed.*kdframe-mace\\[cuequivariance\\]"):
        make_potential(**{key: True})


def test_weights_do_not_depend_on_whether_cuequivariance_is_installed(batch, monkeypatch):
    """mace switches to its reduced product basis whenever cuequivariance imports; kdframe must not follow."""
    import mace.modules.wrapper_ops

    built = {}
    for available in (False, True):
        monkeypatch.setattr(mace.modules.wrapper_ops, "CUET_AVAILABLE", available)
        potential = make_potential()
        built[available] = potential.state_dict(), potential(fresh(batch))["energy"]
    assert {k: v.shape for k, v in built[False][0].items()} == {k: v.shape for k, v in built[True][0].items()}
    torch.testing.assert_close(built[False][1], built[True][1], rtol=0, atol=0)


def test_save_load_round_trip_through_the_entry_point(potential, batch, tmp_path, monkeypatch):
    import pluggy

    from kdframe import hookspecs, plugins

    # Only the mace entry point, so the test does not depend on other plugins being importable.
    pm = pluggy.PluginManager("kdframe")
    pm.add_hookspecs(hookspecs)
    assert pm.load_setuptools_entrypoints(plugins.ENTRY_POINT_GROUP, name="mace") == 1
    registry = plugins.Registry()
    pm.hook.register_architectures(register=lambda a: registry.architectures.__setitem__(a.name, a))
    assert isinstance(registry.architectures["mace"], MaceArchitecture)
    monkeypatch.setattr(plugins, "registry", lambda: registry)

    shift = torch.tensor([-13.6, -13.7], dtype=torch.float64)
    potential.reference_energies[1] = shift  # hydrogen
    try:
        potential.save(tmp_path / "mace.pt")
    finally:
        potential.reference_energies.zero_()
    loaded = Potential.load(tmp_path / "mace.pt")
    assert loaded.hyperparameters == potential.hyperparameters and loaded.heads == HEADS
    before, after = potential(fresh(batch)), loaded(fresh(batch))
    assert torch.equal(after["forces"], before["forces"])
    n_hydrogen = batch.sum_per_conf((batch.species == 1).to(torch.float64))
    torch.testing.assert_close(after["energy"] - before["energy"], n_hydrogen[:, None] * shift, rtol=0, atol=1e-9)


def test_float32_model_trains_two_adam_steps():
    model = make_potential(dtype="float32")
    batch = Batch.from_atoms(molecules(seed=4), index=list(range(len(MOLECULES))))
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.is_floating_point())
    target_e = torch.linspace(-1.0, 1.0, batch.n_conf, dtype=torch.float64)
    target_f = 0.3 * torch.randn(batch.n_atoms, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(3):
        out = model(fresh(batch), create_graph=True)
        assert out["energy"].dtype == torch.float64  # the core sums in float64
        loss = ((out["energy"][:, 0] - target_e) ** 2).mean() + ((out["forces"][..., 0] - target_f) ** 2).mean()
        losses.append(loss.item())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert losses[2] < losses[0]


def test_graph_cache_keeps_at_most_its_size(potential, monkeypatch):
    from kdframe_mace.graph import NeighbourGraphs

    graphs = NeighbourGraphs(SMALL["r_max"], max_entries=2)
    monkeypatch.setattr(potential.net, "graphs", graphs)
    batch = Batch.from_atoms(molecules(), index=list(range(len(MOLECULES))))
    assert batch.n_conf > 2
    potential(fresh(batch), forces=False)
    assert len(graphs) == 2 and graphs.misses == batch.n_conf
    n = len(MOLECULES)
    potential(fresh(Batch.from_atoms(molecules()[-1:], index=[n - 1])), forces=False)  # kept: a hit
    assert graphs.hits == 1
    potential(fresh(Batch.from_atoms(molecules()[:1], index=[0])), forces=False)  # dropped: rebuilt
    assert graphs.misses == n + 1 and len(graphs) == 2


def test_train_and_validation_splits_reuse_their_graphs(potential):
    """Subsets keep the dataset's configuration ids, so the splits of one dataset never evict each other's graphs."""
    from kdframe.data import read_dataset
    from kdframe.config import resolve_path

    data = read_dataset(resolve_path("bundled:extensibility.h5", Path(".")), {"energy": "ccsd(t)_dz.energy"})
    train, valid = data.subset(np.arange(0, 20)), data.subset(np.arange(20, len(data)))
    assert not set(train.ids) & set(valid.ids)
    graphs = potential.net.graphs
    graphs.clear()
    for _ in range(2):  # two epochs of training batches, then validation
        for split in (train, valid):
            for b in split.batches(8, labels=()):
                potential(b, forces=False)
    assert (graphs.misses, graphs.hits) == (len(data), len(data))
