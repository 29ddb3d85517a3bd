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


def test_a_pair_without_triplets():
    computer = build_aev("ani1x", 3).double()
    species, coords = torch.tensor([[2, 0]]), torch.tensor([[[0.0, 0.0, 0.0], [0.97, 0.0, 0.0]]], dtype=torch.float64)
    got = lean.aev_from_neighbors(computer, species, single_system_neighbors(coords, None, None, 5.2))
    torch.testing.assert_close(got, computer(species, coords), rtol=0, atol=1e-12)


def test_chunked_sums_have_exact_second_derivatives(monkeypatch):
    """gradgradcheck: the backward's recomputation stays on the graph (forces in a loss, Hessian-vector products)."""
    monkeypatch.setattr(lean, "MAX_CHUNK", 4)
    monkeypatch.setattr(lean, "MIN_CHUNK", 4)
    computer = build_aev(AEVS["custom, smooth cutoff"], 3).double()
    generator = torch.Generator().manual_seed(2)
    vectors = (torch.rand((6, 3), generator=generator, dtype=torch.float64) - 0.5) * 3
    distances = vectors.norm(dim=-1)
    pair = torch.randint(0, 6, (2, 11), generator=generator)
    pair[1] = (pair[0] + torch.randint(1, 6, (11,), generator=generator)) % 6  # two different pairs
    sign = (torch.randint(0, 2, (11,), generator=generator) * 2 - 1).to(torch.int8)
    terms = lean.Terms(pair, sign, torch.randint(0, 5, (1, 11), generator=generator))
    factors = lean.angular_factors(computer.angular)

    def angular_sum(d: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return lean.ChunkedSum.apply(d, v, terms, (5, computer.angular.num_feats), factors, 1)

    inputs = (distances.requires_grad_(), vectors.requires_grad_())
    assert torch.autograd.gradcheck(angular_sum, inputs)
    assert torch.autograd.gradgradcheck(angular_sum, inputs)
