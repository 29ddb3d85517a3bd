"""kdframe_torchani.aev and the single-system neighbour list give torchani's own AEV (pyaev, all pairs), its
derivatives, and exact second derivatives; in chunks as one piece."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)

pytest.importorskip("torchani")
pytest.importorskip("kdframe_torchani")

from kdframe_torchani import aev as lean  # noqa: E402
from kdframe_torchani.hyperparameters import AevParameters  # noqa: E402
from kdframe_torchani.model import build_aev, single_system_neighbors  # noqa: E402

WATER = torch.tensor([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]], dtype=torch.float64)
SPECIES = [2, 0, 0]  # torchani element indices of O, H, H among (H, C, O)


def waters(side: int, spacing: float = 3.1) -> tuple[torch.Tensor, torch.Tensor]:
    """side³ slightly jittered waters on a grid: many atoms within the angular cutoff of each other."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(float(side))] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    positions = (grid * spacing + WATER).reshape(-1, 3)
    positions = positions + 0.1 * torch.randn(positions.shape, generator=torch.Generator().manual_seed(0),
                                              dtype=torch.float64)
    return torch.tensor(SPECIES * side**3)[None], positions[None]


AEVS = {"ani1x": "ani1x",
        "custom, smooth cutoff": AevParameters(radial_cutoff=4.6, radial_num_shifts=8, angular_cutoff=3.2,
                                               angular_num_sections=4, angular_zeta=14.1, cutoff_fn="smooth")}
CELLS = {
    "open": None,
    "tilted box": torch.tensor([[12.4, 0.0, 0.0], [0.8, 12.4, 0.0], [0.0, -0.5, 12.4]], dtype=torch.float64),
    "box narrower than the cutoff": torch.eye(3, dtype=torch.float64) * 3.1,  # atoms see their own images
}


@pytest.mark.parametrize("aev_name", AEVS)
@pytest.mark.parametrize("cell_name", CELLS)
def test_aev_and_its_gradient_equal_torchanis(aev_name, cell_name, monkeypatch):
    monkeypatch.setattr(lean, "MAX_CHUNK", 97)  # many chunks, the last one partial
    monkeypatch.setattr(lean, "MIN_CHUNK", 97)
    computer = build_aev(AEVS[aev_name], 3).double()
    cell = CELLS[cell_name]
    species, coords = waters(1 if cell_name.startswith("box narrower") else 4)
    pbc = None if cell is None else torch.tensor([True] * 3)
    weights = torch.randn(computer.out_dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def aev_and_gradient(compute) -> tuple[torch.Tensor, torch.Tensor]:
        x = coords.clone().requires_grad_()
        aevs = compute(x)
        return aevs.detach(), torch.autograd.grad((aevs * weights).sum(), x)[0]

    expected = aev_and_gradient(lambda x: computer(species, x, cell, pbc))
    got = aev_and_gradient(lambda x: lean.aev_from_neighbors(
        computer, species, single_system_neighbors(x, cell, pbc, computer.radial.cutoff)))
    assert float(expected[0][..., computer.radial_len:].abs().max()) > 0.1  # angular terms are there
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def test_float32_equals_torchanis_where_exp_and_pow_are_floored():
    """In float32 the Gaussians and the angular power are floored at 3.2e-38 (subnormal numbers are slow); every
    feature and force still agrees with torchani's float32 AEV."""
    computer = build_aev("ani1x", 3)
    species, coords = waters(4)
    coords = coords.float()
    cell, pbc = CELLS["tilted box"].float(), torch.tensor([True] * 3)
    x = coords.clone().requires_grad_()
    expected = computer(species, x, cell, pbc)
    expected_grad = torch.autograd.grad(expected.sum(), x)[0]
    y = coords.clone().requires_grad_()
    got = lean.aev_from_neighbors(computer, species, single_system_neighbors(y, cell, pbc, computer.radial.cutoff))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(got.sum(), y)[0], expected_grad, rtol=1e-4, atol=1e-4)


def test_floors_touch_only_values_below_the_smallest_normal_number():
    """Gaussians and the angular power in float32 equal the exact values down to 1e-36, and stay below 1e-37 where
    those are below the floor."""
    computer = build_aev("ani1x", 3)
    distances = torch.linspace(0.5, 5.2, 500)
    exact_gaussians = torch.exp(-16.0 * (distances.double()[:, None] - computer.radial.shifts.double()) ** 2)
    cos = torch.linspace(-1, 1, 500, dtype=torch.float64)  # angles between the two vectors from the central atom
    vectors = torch.stack([torch.stack([torch.ones_like(cos), torch.zeros_like(cos), torch.zeros_like(cos)], 1),
                           torch.stack([cos, (1 - cos**2).sqrt(), torch.zeros_like(cos)], 1)])
    features = torch.stack([lean.angular_pair_features(computer.angular, torch.ones(500), v) for v in vectors.float()], 1)
    _, angle_terms = lean.angular_factors(computer.angular)(features, torch.ones(500))
    sections = computer.angular.sections.double()
    exact_angles = 2 * ((1 + torch.cos(torch.acos(0.95 * cos)[:, None] - sections)) / 2) ** 32
    for got, exact in [(lean.gaussians(distances, 16.0, computer.radial.shifts).T, exact_gaussians),
                       (angle_terms.T, exact_angles)]:
        normal, floored = exact > 1e-36, exact < 3e-38  # the floor: e times float32's smallest normal number
        assert normal.any() and floored.any()
        torch.testing.assert_close(got[normal].double(), exact[normal], rtol=2e-5, atol=0)
        assert float(got[floored].max()) < 1e-37


@pytest.mark.parametrize("aev_name", ["ani1x", "ani2x", "custom: 8 radial, 2 x 4 angular"])
def test_batches_of_molecules_with_padding_equal_torchani(aev_name):
    """The training path: padded batches (element -1) through torchani's all-pairs search, the largest chunks."""
    spec, n_species = {"ani1x": ("ani1x", 4), "ani2x": ("ani2x", 7),
                       "custom: 8 radial, 2 x 4 angular": (AevParameters(radial_num_shifts=8, angular_num_shifts=2,
                                                                         angular_num_sections=4), 5)}[aev_name]
    computer = build_aev(spec, n_species).double()
    generator = torch.Generator().manual_seed(0)
    elements = torch.randint(0, n_species, (5, 9), generator=generator)
    for molecule, n_atoms in enumerate([9, 6, 4, 1, 2]):  # one lone atom, one pair far apart
        elements[molecule, n_atoms:] = -1
    coords = torch.rand((5, 9, 3), generator=generator, dtype=torch.float64) * 4.0
    coords[4, 1] = coords[4, 0] + 30.0
    weights = torch.randn(computer.out_dim, generator=generator, dtype=torch.float64)
    probe = torch.randn(coords.shape, generator=generator, dtype=torch.float64)

    def aev_gradient_hvp(compute) -> list[torch.Tensor]:
        x = coords.clone().requires_grad_()
        aevs = compute(x)
        (gradient,) = torch.autograd.grad((aevs * weights).sum(), x, create_graph=True)
        (hvp,) = torch.autograd.grad((gradient * probe).sum(), x)
        return [aevs.detach(), gradient.detach(), hvp]

    expected = aev_gradient_hvp(lambda x: computer(elements, x))
    got = aev_gradient_hvp(lambda x: lean.aev_from_neighbors(
        computer, elements, computer.neighborlist(computer.radial.cutoff, elements, x, None, None)))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("distance", [0.97, 4.0])  # a pair within the angular cutoff, and one only within the radial
def test_a_pair_without_triplets(distance):
    computer = build_aev("ani1x", 3).double()
    species = torch.tensor([[2, 0]])
    coords = torch.tensor([[[0.0, 0.0, 0.0], [distance, 0.0, 0.0]]], dtype=torch.float64, requires_grad=True)
    got = lean.aev_from_neighbors(computer, species, single_system_neighbors(coords, None, None, 5.2))
    expected = computer(species, coords)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(got.sum(), coords)[0], torch.autograd.grad(expected.sum(), coords)[0])


@pytest.mark.parametrize("aev_name", AEVS)  # ANI-1x's ζ = 32 by squaring (PowerOfTwo), the custom ζ = 14.1 by pow
def test_chunked_sums_have_exact_second_derivatives(aev_name, monkeypatch):
    """gradgradcheck: the backward's recomputation stays on the graph (forces in a loss, Hessian-vector products)."""
    monkeypatch.setattr(lean, "MAX_CHUNK", 4)
    monkeypatch.setattr(lean, "MIN_CHUNK", 4)
    computer = build_aev(AEVS[aev_name], 3).double()
    generator = torch.Generator().manual_seed(2)
    vectors = (torch.rand((6, 3), generator=generator, dtype=torch.float64) - 0.5) * 3
    distances = vectors.norm(dim=-1)
    pair = torch.randint(0, 6, (2, 11), generator=generator)
    pair[1] = (pair[0] + torch.randint(1, 6, (11,), generator=generator)) % 6  # two different pairs
    sign = (torch.randint(0, 2, (11,), generator=generator) * 2 - 1).double()
    terms = lean.Terms(pair, sign, torch.randint(0, 5, (1, 11), generator=generator))
    factors = lean.angular_factors(computer.angular)

    def angular_sum(d: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return lean.ChunkedSum.apply(lean.angular_pair_features(computer.angular, d, v), terms,
                                     (5, computer.angular.num_feats), factors, 1)

    inputs = (distances.requires_grad_(), vectors.requires_grad_())
    assert torch.autograd.gradcheck(angular_sum, inputs)
    assert torch.autograd.gradgradcheck(angular_sum, inputs)
