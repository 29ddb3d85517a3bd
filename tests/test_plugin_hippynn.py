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


def test_periodic_batches_are_refused_not_silently_wrong():
    from kdframe.errors import DataError

    batch = make_batch(molecules())
    batch.cell = torch.eye(3, dtype=torch.float64).expand(batch.n_conf, 3, 3) * 6.0
    batch.pbc = torch.ones(batch.n_conf, 3, dtype=torch.bool)
    with pytest.raises(DataError, match="periodic systems"):
        potential()(batch, forces=False)
    batch.pbc = torch.zeros(batch.n_conf, 3, dtype=torch.bool)  # a cell without periodicity is fine
    assert potential()(batch, forces=False)["energy"].shape == (batch.n_conf, 1)
