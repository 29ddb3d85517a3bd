"""The PairNet network: what an architecture plugin really has to write.

``forward(batch)`` maps a :class:`~kdframe.batch.Batch` (flat atoms, grouped by configuration)
to per-atom energies ``(n_atoms, n_heads)`` and their per-configuration sums ``(n_conf, n_heads)``.
Forces, Hessian-vector products, reference energies, saving and training are kdframe's job;
the network only has to stay differentiable in ``batch.positions``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from kdframe.architecture import EnergyModel, ModelOutput
from kdframe.batch import Batch
from kdframe.errors import DataError


def shifted_softplus(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.softplus(x) - math.log(2.0)


class Dense(torch.nn.Linear):
    """A linear layer with an optional shifted-softplus activation."""

    def __init__(self, n_in: int, n_out: int, activation: bool = False, bias: bool = True):
        super().__init__(n_in, n_out, bias=bias)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return shifted_softplus(y) if self.activation else y


class Interaction(torch.nn.Module):
    """A SchNet continuous-filter convolution with a residual update."""

    def __init__(self, width: int, n_radial: int):
        super().__init__()
        self.filter = torch.nn.Sequential(Dense(n_radial, width, activation=True), Dense(width, width))
        self.into = Dense(width, width, bias=False)
        self.out = torch.nn.Sequential(Dense(width, width, activation=True), Dense(width, width))

    def forward(self, x: torch.Tensor, basis: torch.Tensor, envelope: torch.Tensor,
                i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        w = self.filter(basis) * envelope[:, None]  # (n_pairs, width), zero at and beyond the cutoff
        messages = self.into(x)[j] * w
        return x + self.out(torch.zeros_like(x).index_add(0, i, messages))


def neighbour_pairs(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """All ordered pairs (i, j), i != j, of atoms of the same configuration (flat atom indices)."""
    n_atoms = batch.atoms_per_conf()
    max_atoms = int(n_atoms.max()) if batch.n_atoms else 0
    device = batch.species.device
    flat = torch.full((batch.n_conf, max_atoms), -1, dtype=torch.long, device=device)  # (conf, local) -> atom
    flat[batch.conf_index, batch.local_index()] = torch.arange(batch.n_atoms, device=device)
    real = flat >= 0
    both = real[:, :, None] & real[:, None, :] & ~torch.eye(max_atoms, dtype=torch.bool, device=device)
    conf, a, b = torch.nonzero(both, as_tuple=True)
    return flat[conf, a], flat[conf, b]


class PairNetModel(EnergyModel):
    def __init__(self, hp, species: Sequence[int], n_heads: int):
        super().__init__()
        self.species = [int(z) for z in species]
        self.cutoff = float(hp.cutoff)
        # atomic number -> embedding row; -1 marks elements this model was not built for
        table = torch.full((max(self.species) + 1,), -1, dtype=torch.long)
        table[torch.tensor(self.species)] = torch.arange(len(self.species))
        self.register_buffer("element_index", table, persistent=False)  # rebuilt from `species` on load
        centres = torch.linspace(0.0, hp.cutoff, hp.n_radial)
        self.register_buffer("centres", centres, persistent=False)
        self.gamma = 0.5 / float(centres[1] - centres[0]) ** 2
        self.embedding = torch.nn.Embedding(len(self.species), hp.width)
        self.interactions = torch.nn.ModuleList(Interaction(hp.width, hp.n_radial) for _ in range(hp.n_interactions))
        # Fidelity heads: the whole network is shared; only the last layer's rows belong to one head each.
        self.readout = torch.nn.Sequential(Dense(hp.width, hp.readout_width, activation=True),
                                           Dense(hp.readout_width, n_heads))

    def forward(self, batch: Batch) -> ModelOutput:
        z = batch.species
        unknown = sorted(set(z.tolist()) - set(self.species))
        if unknown:  # never index the embedding with -1 (that would silently be another element)
            raise DataError(f"pairnet model: elements {unknown} are outside its set {self.species}")
        dtype = self.embedding.weight.dtype
        positions = batch.positions.to(dtype)  # differentiable cast: forces still reach batch.positions
        i, j = neighbour_pairs(batch)
        r = (positions[i] - positions[j]).norm(dim=-1)
        inside = r < self.cutoff
        i, j, r = i[inside], j[inside], r[inside]
        envelope = 0.5 * (torch.cos(torch.pi * r / self.cutoff) + 1.0)
        basis = torch.exp(-self.gamma * (r[:, None] - self.centres.to(dtype)) ** 2)
        x = self.embedding(self.element_index[z])
        for block in self.interactions:
            x = block(x, basis, envelope, i, j)
        atom_energies = self.readout(x)  # (n_atoms, n_heads), in Batch atom order
        return ModelOutput(energy=batch.sum_per_conf(atom_energies), atom_energies=atom_energies)
