"""Forces and Hessian-vector products, taken once here by autograd for every architecture."""

from __future__ import annotations

import torch


def forces(energy: torch.Tensor, positions: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """F = -dE/dR for a (n_conf,) or (n_conf, n_heads) energy; returns (n_atoms, 3[, n_heads])."""
    if energy.dim() == 1:
        (grad,) = torch.autograd.grad(energy.sum(), positions, create_graph=create_graph)
        return -grad
    per_head = [
        -torch.autograd.grad(energy[:, h].sum(), positions, create_graph=create_graph, retain_graph=True)[0]
        for h in range(energy.shape[1])
    ]
    return torch.stack(per_head, dim=-1)


def hessian_vector_product(
    force: torch.Tensor, positions: torch.Tensor, vectors: torch.Tensor, create_graph: bool
) -> torch.Tensor:
    """H v = d(-F·v)/dR by double backward; ``force`` must carry a graph to ``positions``."""
    (hv,) = torch.autograd.grad(-(force * vectors).sum(), positions, create_graph=create_graph)
    return hv
