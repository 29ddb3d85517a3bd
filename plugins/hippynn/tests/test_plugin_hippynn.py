"""The HIP-NN plugin: shapes, atom order, exact derivatives, invariances, heads, persistence, validation."""

from __future__ import annotations

import math

import pydantic
import pytest
import torch

pytest.importorskip("hippynn")

from kdframe.batch import Batch  # noqa: E402
from kdframe.derivatives import hessian_vector_product  # noqa: E402
from kdframe.potential import Potential  # noqa: E402
from kdframe_hippynn import HipnnArchitecture  # noqa: E402

torch.set_num_threads(1)

SMALL = {"width": 8, "n_atom_layers": 1, "n_sensitivities": 6, "dist_soft_max": 4.0, "dist_hard_max": 5.0}

# Equilibrium-like geometries (Å): water, methane, ammonia.
MOLECULES = [
    ([8, 1, 1], [[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.2400, 0.9266, 0.0]]),
    ([6, 1, 1, 1, 1], [[0.0, 0.0, 0.0], [0.629, 0.629, 0.629], [-0.629, -0.629, 0.629],
                       [-0.629, 0.629, -0.629], [0.629, -0.629, -0.629]]),
    ([7, 1, 1, 1], [[0.0, 0.0, 0.0], [0.0, 0.9377, 0.3816], [0.8121, -0.4689, 0.3816], [-0.8121, -0.4689, 0.3816]]),
]


def random_rotation(generator: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def molecules(seed: int = 0) -> list[tuple[list[int], torch.Tensor]]:
    """The three molecules, randomly rotated and slightly distorted (0.05 Å), well apart from overlap."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for species, pos in MOLECULES:
        pos = torch.tensor(pos, dtype=torch.float64) @ random_rotation(g).T
        out.append((species, pos + 0.05 * torch.randn(pos.shape, generator=g, dtype=torch.float64)))
    return out


def make_batch(mols: list[tuple[list[int], torch.Tensor]]) -> Batch:
    species = torch.tensor([z for s, _ in mols for z in s])
    positions = torch.cat([p for _, p in mols]).clone()
    conf_index = torch.cat([torch.full((len(s),), i) for i, (s, _) in enumerate(mols)])
    return Batch(species=species, positions=positions, conf_index=conf_index, n_conf=len(mols))


def potential(heads=("energy",), double: bool = True, **hp) -> Potential:
    torch.manual_seed(0)
    model = Potential(HipnnArchitecture(), {**SMALL, **hp}, species=[1, 6, 7, 8], heads=list(heads))
    return model.double() if double else model


def energy(model: Potential, positions: torch.Tensor, like: Batch) -> torch.Tensor:
    batch = Batch(species=like.species, positions=positions, conf_index=like.conf_index, n_conf=like.n_conf)
    with torch.no_grad():
        return model(batch, forces=False)["energy"]


def test_registered_through_entry_point():
    from kdframe.plugins import registry

    assert isinstance(registry().architectures["hippynn"], HipnnArchitecture)


def test_float32_by_default_and_accepts_float64_positions():
    model = potential(heads=("lo", "hi"), double=False)
    assert {p.dtype for p in model.net.parameters() if p.is_floating_point()} == {torch.float32}
    batch = make_batch(molecules())
    out = model(batch)
    assert out["energy"].shape == (3, 2) and out["atom_energies"].shape == (12, 2)
    assert out["forces"].shape == (12, 3, 2) and out["forces"].dtype == torch.float64
    assert torch.isfinite(out["forces"]).all()


@pytest.mark.parametrize("l_max", [0, 1, 2])
def test_energy_is_sum_of_atom_energies(l_max):
    model = potential(heads=("lo", "hi"), l_max=l_max)
    batch = make_batch(molecules())
    out = model.net(batch)
    assert out.energy.shape == (3, 2) and out.atom_energies.shape == (12, 2)
    torch.testing.assert_close(batch.sum_per_conf(out.atom_energies), out.energy, rtol=1e-12, atol=1e-12)


def test_atom_energies_follow_batch_order():
    model = potential(heads=("lo", "hi"))
    mols = molecules()
    together = model.net(make_batch(mols)).atom_energies
    # Each configuration alone gives the same slice: no mixing across configurations.
    alone = torch.cat([model.net(make_batch([m])).atom_energies for m in mols])
    torch.testing.assert_close(together, alone, rtol=1e-10, atol=1e-12)
    # Permuting atoms inside each configuration permutes the atom energies the same way.
    g = torch.Generator().manual_seed(1)
    perms = [torch.randperm(len(s), generator=g) for s, _ in mols]
    shuffled = [([s[i] for i in perm], p[perm]) for (s, p), perm in zip(mols, perms)]
    starts = [0, 3, 8]
    flat_perm = torch.cat([perm + start for perm, start in zip(perms, starts)])
    permuted = model.net(make_batch(shuffled)).atom_energies
    torch.testing.assert_close(permuted, together[flat_perm], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("l_max", [0, 2])
def test_forces_equal_finite_differences(l_max):
    model = potential(heads=("lo", "hi"), l_max=l_max)
    batch = make_batch(molecules())
    forces = model(batch)["forces"].detach()  # (n_atoms, 3, n_heads)
    x0, h = batch.positions.detach(), 1e-5
    numeric = torch.zeros_like(forces)
    for a in range(x0.shape[0]):
        for k in range(3):
            step = torch.zeros_like(x0)
            step[a, k] = h
            de = energy(model, x0 + step, batch) - energy(model, x0 - step, batch)  # (n_conf, n_heads)
            numeric[a, k] = -de[batch.conf_index[a]] / (2 * h)
    torch.testing.assert_close(forces, numeric, rtol=1e-6, atol=1e-6 * forces.abs().max().item())


def test_hessian_vector_product_equals_finite_difference_of_forces():
    model = potential(heads=("lo", "hi"))
    batch = make_batch(molecules())
    v = torch.randn(batch.positions.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    force = model(batch, create_graph=True)["forces"][..., 1]
    hv = hessian_vector_product(force, batch.positions, v, create_graph=False)

    def head_forces(x: torch.Tensor) -> torch.Tensor:
        b = Batch(species=batch.species, positions=x.clone(), conf_index=batch.conf_index, n_conf=batch.n_conf)
        return model(b)["forces"][..., 1].detach()

    h, x0 = 1e-5, batch.positions.detach()
    numeric = -(head_forces(x0 + h * v) - head_forces(x0 - h * v)) / (2 * h)  # H v = -dF/dR · v
    torch.testing.assert_close(hv, numeric, rtol=1e-6, atol=1e-6 * numeric.abs().max().item())


def test_energy_invariant_to_rotation_and_translation():
    model = potential(heads=("lo", "hi"))
    batch = make_batch(molecules())
    rotation = random_rotation(torch.Generator().manual_seed(3))
    moved = batch.positions @ rotation.T + torch.tensor([3.0, -7.5, 12.25], dtype=torch.float64)
    expected = energy(model, batch.positions, batch)
    torch.testing.assert_close(energy(model, moved, batch), expected, rtol=1e-10, atol=1e-10)


def test_heads_are_separate_readouts_on_a_shared_network():
    from hippynn.layers.targets import HEnergy
    from hippynn.networks.hipnn import Hipnn

    model = potential(heads=("lo", "hi"))
    modules = list(model.net.modules())
    networks = [m for m in modules if isinstance(m, Hipnn)]
    readouts = [m for m in modules if isinstance(m, HEnergy)]
    assert len(networks) == 1 and len(readouts) == 2
    out = model.net(make_batch(molecules()))
    assert not torch.allclose(out.energy[:, 0], out.energy[:, 1])
    # The second head's energy depends on the shared network and its own readout only.
    out.energy[:, 1].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in readouts[1].parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in readouts[0].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in networks[0].parameters())


def test_hierarchicality_is_a_differentiable_nonnegative_scalar():
    model = potential(heads=("lo", "hi"), double=False)
    reg = model(make_batch(molecules()), forces=False)["regulariser:hierarchicality"]
    assert reg.dim() == 0 and reg.item() >= 0 and math.isfinite(reg.item()) and reg.requires_grad
    reg.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.net.parameters())


@pytest.mark.parametrize("l_max", [0, 2])
def test_save_load_round_trip(tmp_path, l_max):
    model = potential(heads=("lo", "hi"), double=False, l_max=l_max)
    with torch.no_grad():
        model.reference_energies[1] = torch.tensor([-13.6, -13.0], dtype=torch.float64)
    model.save(tmp_path / "model.pt")
    loaded = Potential.load(tmp_path / "model.pt")
    assert loaded.heads == ["lo", "hi"] and loaded.hyperparameters == model.hyperparameters
    a, b = model(make_batch(molecules())), loaded(make_batch(molecules()))
    for key in ("energy", "atom_energies", "forces"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_hyperparameter_typo_names_the_key():
    with pytest.raises(pydantic.ValidationError, match="widht"):
        Potential(HipnnArchitecture(), {"widht": 8}, species=[1, 6])


@pytest.mark.parametrize(
    "bad",
    [{"dist_soft_min": 3.0, "dist_soft_max": 2.0}, {"dist_soft_max": 7.0, "dist_hard_max": 6.5}, {"l_max": 3},
     {"n_interaction_layers": 0}],
)
def test_invalid_hyperparameters_are_rejected(bad):
    with pytest.raises(pydantic.ValidationError, match="|".join(bad)):
        HipnnArchitecture().parse(bad)


def water_box(cell: list[list[float]], n: int = 8, seed: int = 0):
    """``n`` water molecules at random places in a periodic cell (ase.Atoms)."""
    import ase
    import numpy as np

    rng = np.random.default_rng(seed)
    water = np.array(MOLECULES[0][1])
    frac = rng.uniform(0, 1, (n, 3))
    positions = np.concatenate([water + f @ np.array(cell) for f in frac])
    return ase.Atoms("OH2" * n, positions=positions, cell=cell, pbc=True)


def energy_and_forces(model: Potential, atoms) -> tuple[torch.Tensor, torch.Tensor]:
    out = model(Batch.from_atoms([atoms]))
    return out["energy"].detach(), out["forces"].detach()


def test_cell_list_gives_the_all_pairs_result(monkeypatch):
    """Large or periodic systems take the cell list; on open systems it finds exactly hippynn's all pairs."""
    import kdframe_hippynn.pairs as pairs

    g = torch.Generator().manual_seed(3)
    mols = [(s, p + 4.0 * torch.randn(3, generator=g, dtype=torch.float64)) for s, p in molecules() * 10]
    cluster = make_batch([([z for s, _ in mols for z in s], torch.cat([p for _, p in mols]))])
    batches = {"cluster": cluster, "molecules": make_batch(molecules())}
    model = potential(l_max=1)
    expected = {k: model(b) for k, b in batches.items()}
    monkeypatch.setattr(pairs, "ALL_PAIRS_SLOTS", 0)
    for key, batch in batches.items():
        out = model(batch)
        torch.testing.assert_close(out["energy"], expected[key]["energy"], rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(out["forces"], expected[key]["forces"], rtol=1e-10, atol=1e-10)


@pytest.fixture
def kernels(request):
    """hippynn's message-passing kernels set to ``request.param`` for the test, restored afterwards."""
    from hippynn import custom_kernels

    potential()  # the plugin has picked its kernels
    active = custom_kernels.CUSTOM_KERNELS_ACTIVE
    custom_kernels.set_custom_kernels(request.param)
    yield request.param
    custom_kernels.set_custom_kernels(active)


def test_cpu_kernels_are_numba_and_cached_on_disk():
    import numba
    from hippynn import custom_kernels
    from hippynn.custom_kernels import env_numba
    from numba.core.caching import NullCache

    potential()
    assert custom_kernels.CUSTOM_KERNELS_ACTIVE == "numba"
    assert torch.get_num_threads() == numba.get_num_threads() == 1  # torch's count (this module's), kept
    for kernel in (env_numba.WrappedEnvsum, env_numba.WrappedSensesum, env_numba.WrappedFeatsum):
        assert not isinstance(kernel.cpu_kernel.__wrapped__._cache, NullCache)


def _derivatives(model: Potential, batch: Batch) -> list[torch.Tensor]:
    """E, F and one H·v."""
    v = torch.randn(batch.positions.shape, generator=torch.Generator().manual_seed(1), dtype=batch.positions.dtype)
    out = model(batch, create_graph=True)
    hv = hessian_vector_product(out["forces"][..., 0], batch.positions, v, create_graph=False)
    return [out["energy"].detach(), out["forces"].detach(), hv]


@pytest.mark.parametrize("kernels", ["numba"], indirect=True)
def test_numba_kernels_match_plain_torch(kernels):
    """hippynn's numba kernels (the plugin's CPU choice) give plain torch's E, F and H·v, also where one atom pair
    recurs through several images (a 6 Å cell, 5 Å cutoff) and in float32. Not to float64 precision: the numba
    envsum skips sensitivities below 1e-10 (here differences up to ~2e-10 of the largest value)."""
    from hippynn import custom_kernels

    from kdframe_hippynn.pairs import kernels_for_repeated_pairs

    atoms = water_box([[6.0, 0, 0], [0.4, 6.0, 0], [0.3, -0.2, 6.5]])
    batches = [make_batch(molecules()), Batch.from_atoms([atoms]).to("cpu", torch.float64)]
    for double, tolerance in [(True, 1e-8), (False, 1e-4)]:
        model = potential(l_max=2, double=double)
        for batch in batches:
            batch = batch.to("cpu", torch.float64 if double else torch.float32)
            fast = _derivatives(model, batch)
            custom_kernels.set_custom_kernels("_pytorch_raw")
            plain = _derivatives(model, batch)
            custom_kernels.set_custom_kernels(kernels)
            for a, b in zip(fast, plain):
                torch.testing.assert_close(a, b, rtol=0, atol=tolerance * float(b.abs().max()))
    with kernels_for_repeated_pairs(True):  # the "sparse" fallback leaves other kernels alone
        assert custom_kernels.CUSTOM_KERNELS_ACTIVE == "numba"


@pytest.mark.parametrize("kernels", ["numba", "sparse"], indirect=True)
@pytest.mark.parametrize("side", [6.0, 11.0])  # narrower / wider than twice the 5 Å cutoff
def test_periodic_energies_match_hippynns_own_periodic_pairs(side, kernels):
    """Same weights on hippynn's DynamicPeriodicPairs (its general periodic pair finder) give the same E and F.

    In the 6 Å cell one atom pair recurs through several images, which hippynn's "sparse" CPU kernels refuse;
    with those the model switches to plain-torch kernels for that call and back afterwards.
    """
    from hippynn import custom_kernels
    from hippynn.graphs.nodes.pairs import DynamicPeriodicPairs

    import kdframe_hippynn.graph as graph
    from kdframe_hippynn.pairs import NeighbourPairIndexer

    atoms = water_box([[side, 0, 0], [0.4, side, 0], [0.3, -0.2, side + 0.5]])
    model = potential(l_max=2)
    kernels = custom_kernels.CUSTOM_KERNELS_ACTIVE
    energy, forces = energy_and_forces(model, atoms)
    assert custom_kernels.CUSTOM_KERNELS_ACTIVE == kernels
    try:
        graph.NeighbourPairIndexer = DynamicPeriodicPairs
        reference = potential(l_max=2)
    finally:
        graph.NeighbourPairIndexer = NeighbourPairIndexer
    # The reference graph numbers its nodes differently: copy the weights node by node.
    modules = {node.name: model.net.graph.get_module(node) for node in model.net.graph.names_dict}
    for node in reference.net.graph.names_dict:
        if node.name in modules and list(modules[node.name].parameters()):
            reference.net.graph.get_module(node).load_state_dict(modules[node.name].state_dict())
    reference.load_state_dict(model.state_dict(), strict=False)  # reference energies
    ref_energy, ref_forces = energy_and_forces(reference, atoms)
    torch.testing.assert_close(energy, ref_energy, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(forces, ref_forces, rtol=1e-10, atol=1e-10)
    open_energy, _ = energy_and_forces(model, _open(atoms))
    assert abs(float(open_energy - energy)) > 1e-6  # the images matter: periodicity is not ignored


def _open(atoms):
    atoms = atoms.copy()
    atoms.pbc = False
    return atoms


def test_periodic_forces_are_exact_and_lattice_translations_change_nothing():
    atoms = water_box([[7.0, 0, 0], [0, 7.5, 0], [0, 0, 8.0]], seed=1)
    model = potential(l_max=1)
    energy, forces = energy_and_forces(model, atoms)
    moved = atoms.copy()
    moved.positions[4] += moved.cell[1] - 2 * moved.cell[0]
    moved_energy, moved_forces = energy_and_forces(model, moved)
    torch.testing.assert_close(moved_energy, energy, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(moved_forces, forces, rtol=1e-10, atol=1e-10)
    for atom, axis in [(0, 0), (5, 2)]:
        shifted = [atoms.copy(), atoms.copy()]
        shifted[0].positions[atom, axis] += 1e-4
        shifted[1].positions[atom, axis] -= 1e-4
        e_plus, e_minus = (energy_and_forces(model, a)[0] for a in shifted)
        assert float(-(e_plus - e_minus) / 2e-4) == pytest.approx(float(forces[atom, axis]), rel=1e-5, abs=1e-7)


def test_slab_periodic_in_two_directions():
    """pbc (True, True, False): the same as full periodicity when the third lattice vector leaves a vacuum
    wider than the cutoff, and different from the open system."""
    atoms = water_box([[7.0, 0, 0], [0, 7.0, 0], [0, 0, 6.0]], seed=2)
    slab = atoms.copy()
    slab.pbc = [True, True, False]
    vacuum = atoms.copy()
    vacuum.cell[2] = [0, 0, 40.0]
    model = potential()
    energy = energy_and_forces(model, slab)[0]
    torch.testing.assert_close(energy, energy_and_forces(model, vacuum)[0], rtol=1e-12, atol=1e-10)
    assert abs(float(energy - energy_and_forces(model, _open(atoms))[0])) > 1e-6


def test_saved_hippynn_model_gives_kdframes_predictions_in_hippynns_calculator(tmp_path):
    """``save_hippynn_model`` writes a GraphModule whose energy nodes drive hippynn's own ASE calculator to
    kdframe's energies (reference energies included), forces and stress, head by head, molecule and periodic box."""
    import ase.build
    from calculators import assert_same_predictions
    from hippynn.interfaces.ase_interface import HippynnCalculator

    from kdframe.errors import ConfigError
    from kdframe.plugins import registry
    from kdframe_hippynn import save_hippynn_model

    model = potential(heads=("lo", "hi"), l_max=1)
    model.reference_energies[[1, 6, 7, 8]] = torch.tensor(
        [[-13.6, -13.0], [-1029.0, -1027.5], [-1484.0, -1483.0], [-2041.0, -2040.0]], dtype=torch.float64)
    graph = torch.load(save_hippynn_model(model, tmp_path / "hipnn.pt"), weights_only=False)
    box = water_box([[8.0, 0, 0], [0.4, 8.0, 0], [0.3, -0.2, 8.5]])
    for h, head in enumerate(model.heads):
        theirs = HippynnCalculator(graph.node_from_name(f"HEnergy{h:03d}"), en_unit=1.0, dist_unit=1.0)
        theirs.to(torch.float64)
        assert_same_predictions(theirs, model, head, [box, ase.build.molecule("CH3CH2OH")])
    assert abs(box.get_potential_energy()) > 1000  # the reference energies are in
    with pytest.raises(ConfigError, match="only hippynn models export"):
        save_hippynn_model(Potential(registry().architectures["toy"], {}, [1, 8]), tmp_path / "toy.pt")


def test_a_float32_model_exports_its_reference_energies_in_float64(tmp_path):
    """Reference energies with more digits than float32 holds survive export (a float32 file would be 5e-5 eV off
    per carbon atom: 2.8 meV on this box)."""
    import ase.build
    from hippynn.interfaces.ase_interface import HippynnCalculator

    from kdframe.calculator import KdframeCalculator
    from kdframe_hippynn import save_hippynn_model

    model = potential(double=False)
    model.reference_energies[[1, 6, 7, 8], 0] = torch.tensor([-13.6123456789, -1029.2345678901, -1484.3456789012,
                                                              -2041.4567890123], dtype=torch.float64)
    box = ase.build.bulk("C", "diamond", a=3.57) * (3, 3, 3)
    box.rattle(0.05, seed=1)
    ours = KdframeCalculator(model).get_potential_energy(box)
    graph = torch.load(save_hippynn_model(model, tmp_path / "f32.pt"), weights_only=False)
    theirs = HippynnCalculator(graph.node_from_name("HEnergy000"), en_unit=1.0, dist_unit=1.0)
    theirs.to(torch.float64)
    assert abs(theirs.get_potential_energy(box) - ours) < 5e-4
