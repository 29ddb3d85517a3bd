"""A tiny radial-descriptor network for fast core tests, and analytic reference labels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pydantic
import torch

from kdframe.architecture import Architecture, EnergyModel, ModelOutput
from kdframe.batch import Batch

# Equilibrium-ish geometries (Å) of small molecules.
MOLECULES = {
    "water": ([8, 1, 1], [[0, 0, 0.1173], [0, 0.7572, -0.4692], [0, -0.7572, -0.4692]]),
    "methane": ([6, 1, 1, 1, 1], [[0, 0, 0], [0.629, 0.629, 0.629], [-0.629, -0.629, 0.629],
                                  [-0.629, 0.629, -0.629], [0.629, -0.629, -0.629]]),
    "ammonia": ([7, 1, 1, 1], [[0, 0, 0.1], [0.94, 0, -0.27], [-0.47, 0.814, -0.27], [-0.47, -0.814, -0.27]]),
    "methanol": ([6, 8, 1, 1, 1, 1], [[-0.047, 0.664, 0], [-0.047, -0.758, 0], [-1.086, 0.975, 0],
                                       [0.431, 1.08, 0.89], [0.431, 1.08, -0.89], [0.878, -1.056, 0]]),
}


class ToyHyperparameters(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    width: int = 16
    n_radial: int = 8
    cutoff: float = 5.0


class ToyModel(EnergyModel):
    def __init__(self, hp: ToyHyperparameters, species: Sequence[int], n_heads: int):
        super().__init__()
        self.register_buffer("embed_index", torch.full((max(species) + 1,), -1, dtype=torch.long))
        self.embed_index[torch.tensor(species)] = torch.arange(len(species))
        self.register_buffer("centres", torch.linspace(0.5, hp.cutoff, hp.n_radial))
        self.cutoff = hp.cutoff
        self.embedding = torch.nn.Embedding(len(species), hp.width)
        self.radial = torch.nn.Linear(hp.n_radial, hp.width)
        self.readout = torch.nn.Sequential(torch.nn.Linear(hp.width, hp.width), torch.nn.SiLU(),
                                           torch.nn.Linear(hp.width, n_heads))

    def forward(self, batch: Batch) -> ModelOutput:
        i, j = torch.nonzero(batch.conf_index[:, None] == batch.conf_index[None, :], as_tuple=True)
        keep = i != j
        i, j = i[keep], j[keep]
        r = (batch.positions[i] - batch.positions[j]).norm(dim=-1)
        envelope = 0.5 * (torch.cos(torch.pi * r / self.cutoff) + 1) * (r < self.cutoff)
        g = torch.exp(-((r[:, None] - self.centres) ** 2)) * envelope[:, None]
        dtype = self.radial.weight.dtype
        features = torch.zeros(batch.n_atoms, g.shape[1], dtype=g.dtype, device=g.device).index_add(0, i, g)
        h = self.embedding(self.embed_index[batch.species]) + self.radial(features.to(dtype))
        atom_energies = self.readout(h)
        return ModelOutput(energy=batch.sum_per_conf(atom_energies), atom_energies=atom_energies,
                           regularisers={"smoothness": self.radial.weight.pow(2).sum()})


class ToyArchitecture(Architecture):
    name = "toy"
    regularisers = ("smoothness",)
    Hyperparameters = ToyHyperparameters

    def build(self, hyperparameters, species, heads):
        return ToyModel(hyperparameters, species, len(heads))


def morse_energy(species: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """An analytic Morse pair energy (eV) of one molecule: a learnable, physical-looking reference."""
    r0 = {1: 0.35, 6: 0.75, 7: 0.72, 8: 0.70}
    radii = torch.tensor([r0[int(z)] for z in species], dtype=positions.dtype)
    i, j = torch.triu_indices(len(species), len(species), 1)
    r = (positions[i] - positions[j]).norm(dim=-1)
    x = torch.exp(-1.8 * (r - radii[i] - radii[j]))
    return (2.0 * (x * x - 2 * x)).sum() - 13.6 * (species == 1).sum() - 1030.0 * (species == 6).sum() \
        - 1480.0 * (species == 7).sum() - 2040.0 * (species == 8).sum()


def write_ani_file(path, n_conf: int = 12, seed: int = 0, molecules: dict | None = None, missing_every: int = 0) -> None:
    """ANI-layout HDF5 with ``morse.energy`` (Hartree) and ``morse.forces`` (Hartree/Å) on distorted geometries."""
    import h5py

    from kdframe.units import HARTREE_TO_EV

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        for name, (z, xyz) in (molecules or MOLECULES).items():
            z = np.array(z)
            coords = np.array(xyz)[None] + rng.normal(0, 0.06, (n_conf, len(z), 3))
            energies, forces = [], []
            for c in coords:
                pos = torch.tensor(c, requires_grad=True)
                e = morse_energy(torch.tensor(z), pos)
                (g,) = torch.autograd.grad(e, pos)
                e = e.detach()
                energies.append(e.item() / HARTREE_TO_EV)
                forces.append(-g.numpy() / HARTREE_TO_EV)
            energies = np.array(energies)
            if missing_every:
                energies[::missing_every] = np.nan
            g = f.create_group(name)
            g["atomic_numbers"] = z
            g["coordinates"] = coords
            g["morse.energy"] = energies
            g["morse.forces"] = np.array(forces)
