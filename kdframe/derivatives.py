"""Forces and Hessian-vector products, taken once here by autograd for every architecture.

Hessian labels use a per-atom layout that survives batching and subsets: ``H[i, a, j, b]``
is d²E/dR_ia dR_jb (eV/Å²) for atom ``i`` and the ``j``-th atom of ``i``'s configuration,
shape (n_atoms, 3, max_atoms, 3), NaN where ``j`` is past that configuration's atoms.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .batch import Batch


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
    force: torch.Tensor, positions: torch.Tensor, vectors: torch.Tensor, create_graph: bool,
    retain_graph: bool | None = None,
) -> torch.Tensor:
    """H v = d(-F·v)/dR by double backward; ``force`` must carry a graph to ``positions``."""
    (hv,) = torch.autograd.grad(-(force * vectors).sum(), positions, create_graph=create_graph,
                                retain_graph=retain_graph)
    return hv


def hessian(force: torch.Tensor, batch: Batch, create_graph: bool, max_atoms: int | None = None) -> torch.Tensor:
    """Every configuration's Hessian in the per-atom layout, by 3 x max_atoms HVPs along one-hot columns.

    Columns past a configuration's atoms are 0 (labels hold NaN there). For small molecules
    only (E-F-H training); HVP training never forms this.
    """
    local = batch.local_index()
    width = max_atoms if max_atoms is not None else int(batch.atoms_per_conf().max())
    out = force.new_zeros(batch.n_atoms, 3, width, 3)
    for j in range(min(width, int(local.max()) + 1 if batch.n_atoms else 0)):
        for b in range(3):
            column = torch.zeros_like(force)
            column[local == j, b] = 1.0
            out[:, :, j, b] = hessian_vector_product(force, batch.positions, column, create_graph, retain_graph=True)
    return out


def hessian_times(labels: torch.Tensor, vectors: torch.Tensor, batch: Batch) -> torch.Tensor:
    """H v (n_atoms, 3) from a Hessian label in the per-atom layout; NaN where the label is missing."""
    width = labels.shape[2]
    padded = vectors.new_zeros(batch.n_conf, width, 3).index_put((batch.conf_index, batch.local_index()), vectors)
    inside = torch.arange(width, device=labels.device) < batch.atoms_per_conf()[batch.conf_index, None]
    labels = torch.where(inside[:, None, :, None], labels, 0.0)
    return torch.einsum("iajb,ijb->ia", labels, padded.to(labels.dtype)[batch.conf_index])


def pack_hessians(hessians: Sequence[np.ndarray], max_atoms: int | None = None) -> np.ndarray:
    """A per-atom Hessian label (n_atoms, 3, max_atoms, 3) from per-configuration (3n, 3n) Hessians."""
    sizes = [h.shape[0] // 3 for h in hessians]
    width = max_atoms or max(sizes, default=0)
    out = np.full((sum(sizes), 3, width, 3), np.nan)
    start = 0
    for n, h in zip(sizes, hessians):
        out[start:start + n, :, :n, :] = np.asarray(h, dtype=np.float64).reshape(n, 3, n, 3)
        start += n
    return out
