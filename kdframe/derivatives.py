"""Forces, stress and Hessian-vector products, taken once here by autograd for every architecture.

Stress is the derivative of the energy with respect to a homogeneous strain of positions and cell
(:func:`strained`): sigma = (1/V) dE/d(epsilon), eV/Å³, ASE's sign (negative under compression).

Hessian labels use a per-atom layout that survives batching and subsets: ``H[i, a, j, b]``
is d²E/dR_ia dR_jb (eV/Å²) for atom ``i`` and the ``j``-th atom of ``i``'s configuration,
shape (n_atoms, 3, max_atoms, 3), NaN where ``j`` is past that configuration's atoms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from .batch import Batch


def energy_gradients(energy: torch.Tensor, inputs: Sequence[torch.Tensor], create_graph: bool) -> list[torch.Tensor]:
    """dE/dx for each of ``inputs``, in one backward per head; a (n_conf, n_heads) energy adds a last head axis."""
    def grad(total: torch.Tensor, retain: bool | None) -> list[torch.Tensor]:
        # Unused inputs stay an error: a network that detaches positions must not get zero forces silently.
        return list(torch.autograd.grad(total, inputs, create_graph=create_graph, retain_graph=retain))

    if energy.dim() == 1:
        return grad(energy.sum(), None)
    per_head = [grad(energy[:, h].sum(), True) for h in range(energy.shape[1])]
    return [torch.stack([g[i] for g in per_head], dim=-1) for i in range(len(inputs))]


def forces(energy: torch.Tensor, positions: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """F = -dE/dR for a (n_conf,) or (n_conf, n_heads) energy; returns (n_atoms, 3[, n_heads])."""
    return -energy_gradients(energy, [positions], create_graph)[0]


def strained(batch: Batch) -> tuple[Batch, torch.Tensor]:
    """The batch under a zero strain epsilon (n_conf, 3, 3) that autograd can differentiate.

    Positions become r (1 + e) and cells h (1 + e), with e the symmetric part of epsilon, so that
    dE/d(epsilon) is the symmetric virial; positions stay differentiable (forces are unchanged at epsilon = 0).
    """
    strain = batch.positions.new_zeros((batch.n_conf, 3, 3), requires_grad=True)
    symmetric = 0.5 * (strain + strain.transpose(1, 2))
    positions = batch.positions + torch.einsum("ai,aij->aj", batch.positions, symmetric[batch.conf_index])
    cell = None if batch.cell is None else batch.cell + torch.bmm(batch.cell.to(symmetric), symmetric)
    return replace(batch, positions=positions, cell=cell), strain


def stress(virial: torch.Tensor, batch: Batch) -> torch.Tensor:
    """sigma = dE/d(epsilon) / V (n_conf, 3, 3[, n_heads]) from :func:`strained`'s gradient; NaN for a
    configuration that is not periodic along all three lattice vectors (it has no volume)."""
    virial = virial.double()
    if batch.cell is None or batch.pbc is None:
        return torch.full_like(virial, float("nan"))
    volume = torch.linalg.det(batch.cell.detach().double()).abs()
    bulk = batch.pbc.all(dim=-1).to(volume.device) & (volume > 0)
    volume = torch.where(bulk, volume, torch.nan).reshape(-1, *([1] * (virial.dim() - 1)))
    return virial / volume


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
