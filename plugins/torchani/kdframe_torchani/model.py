"""The ANI network: an AEV of torchani's terms (computed by :mod:`.aev`), then one MLP per element with ``n_heads``
outputs.

The networks work in Hartree (like every ANI model); :class:`AniModel` returns eV.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from ase.data import chemical_symbols
from vesin import NeighborList

with warnings.catch_warnings():  # CPU installs warn that torchani's optional CUDA extensions are missing
    warnings.filterwarnings("ignore", message="The extensions", category=UserWarning)
    from torchani import neurochem  # noqa: F401  (re-exported for .pretrained)
    from torchani.aev import AEVComputer
    from torchani.aev._terms import ANIAngular, ANIRadial
    from torchani.neighbors import Neighbors
    from torchani.nn import AtomicNetwork, TightCELU  # noqa: F401

from kdframe.architecture import EnergyModel, ModelOutput
from kdframe.batch import Batch
from kdframe.cells import regular_cell
from kdframe.errors import ConfigError, DataError
from kdframe.units import HARTREE_TO_EV

from . import layout
from .aev import aev_from_neighbors
from .hyperparameters import AevParameters, AniHyperparameters
from .sharing import cached_aev

ACTIVATIONS = {"gelu": torch.nn.GELU, "silu": torch.nn.SiLU, "softplus": torch.nn.Softplus}


def build_aev(spec: str | AevParameters, num_species: int) -> AEVComputer:
    """torchani's AEV computer for a preset name (``ani1x``, ``ani2x``) or a custom block."""
    if spec == "ani1x":
        return AEVComputer.like_1x(num_species=num_species)
    if spec == "ani2x":
        return AEVComputer.like_2x(num_species=num_species)
    assert isinstance(spec, AevParameters)
    if spec.radial_shifts is None:
        radial = ANIRadial.cover_linearly(spec.radial_start, spec.radial_cutoff, spec.radial_eta,
                                          spec.radial_num_shifts, spec.cutoff_fn)
    else:
        radial = ANIRadial(spec.radial_eta, spec.radial_shifts, spec.radial_cutoff, spec.cutoff_fn)
    linear = ANIAngular.cover_linearly(spec.angular_start, spec.angular_cutoff, spec.angular_eta, spec.angular_zeta,
                                       spec.angular_num_shifts, spec.angular_num_sections, spec.cutoff_fn)
    shifts = spec.angular_shifts if spec.angular_shifts is not None else linear.shifts.tolist()
    sections = spec.angular_sections if spec.angular_sections is not None else linear.sections.tolist()
    angular = ANIAngular(spec.angular_eta, spec.angular_zeta, shifts, sections, spec.angular_cutoff, spec.cutoff_fn)
    return AEVComputer(radial, angular, num_species=num_species, cutoff_fn=spec.cutoff_fn)


def hidden_widths(hp: AniHyperparameters, symbol: str) -> list[int]:
    if isinstance(hp.hidden, list):
        return list(hp.hidden)
    if symbol not in hp.hidden:
        raise ConfigError("model.hidden", f"no hidden widths for element {symbol}", hp.hidden)
    return list(hp.hidden[symbol])


class AniModel(EnergyModel):
    """ANI energy model on kdframe batches; ``networks[symbol]`` is a torchani ``AtomicNetwork``."""

    index_of: torch.Tensor

    def __init__(self, hp: AniHyperparameters, species: Sequence[int], heads: Sequence[str]):
        super().__init__()
        elements = list(hp.species_order) if hp.species_order is not None else sorted(int(z) for z in species)
        if sorted(elements) != sorted(int(z) for z in species):
            raise ConfigError("model.species_order", f"{elements} is not an ordering of the model's elements",
                              [str(z) for z in sorted(species)])
        self.elements = elements
        self.n_heads = len(heads)
        self.register_buffer("index_of", layout.index_table(elements), persistent=False)
        self.aev = build_aev(hp.aev, len(elements))
        activation = (torch.nn.CELU(alpha=hp.celu_alpha) if hp.activation == "celu"
                      else ACTIVATIONS[hp.activation]())
        self.networks = torch.nn.ModuleDict({
            chemical_symbols[z]: AtomicNetwork([self.aev.out_dim, *hidden_widths(hp, chemical_symbols[z]),
                                                self.n_heads], activation=activation, bias=True)
            for z in elements
        })
        self.to(getattr(torch, hp.dtype))
        aev_spec = hp.aev if isinstance(hp.aev, str) else hp.aev.model_dump()
        self._aev_key = json.dumps([aev_spec, elements], sort_keys=True)

    def element_indices(self, species: torch.Tensor) -> torch.Tensor:
        """torchani element index of each atom; an element outside the model's set is an error."""
        idx = self.index_of[species.clamp(0, 118)]
        if bool((idx < 0).any()):
            unknown = sorted(set(species[idx < 0].tolist()))
            raise DataError(f"torchani model: elements {unknown} are outside this model's set {sorted(self.elements)}")
        return idx

    def forward(self, batch: Batch) -> ModelOutput:
        if batch.n_atoms == 0:
            empty = batch.positions.new_zeros((0, self.n_heads), dtype=torch.float64)
            return ModelOutput(energy=batch.sum_per_conf(empty), atom_energies=empty)
        idx = self.element_indices(batch.species)
        dtype = self.aev.radial.shifts.dtype
        key = (self._aev_key, dtype, self.index_of.device)
        aevs = cached_aev(key, batch, lambda: self.compute_aevs(batch, idx, dtype))
        atom = aevs.new_zeros((batch.n_atoms, self.n_heads))
        for i, net in enumerate(self.networks.values()):
            sel = (idx == i).nonzero().squeeze(1)
            if sel.numel():
                atom = atom.index_add(0, sel, net(aevs.index_select(0, sel)))
        atom_ev = atom.double() * HARTREE_TO_EV  # Hartree -> eV, in float64 like the core's totals
        return ModelOutput(energy=batch.sum_per_conf(atom_ev), atom_energies=atom_ev)

    def compute_aevs(self, batch: Batch, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """AEVs (n_atoms, aev_dim) in the batch's flat atom order; periodic configurations one at a time."""
        positions = batch.positions.to(dtype)
        periodic = batch.pbc.any(-1) if batch.pbc is not None else None
        if periodic is None or not bool(periodic.any()):
            return self._group_aevs(batch, idx, positions, None, None, None)
        if batch.cell is None:
            raise DataError("torchani model: a periodic batch (pbc) needs a cell")
        if batch.n_conf == 1:  # one periodic system (MD): no copy into a batch-wide array
            return self._group_aevs(batch, idx, positions, None, batch.cell[0].to(dtype), batch.pbc[0])
        aevs = positions.new_zeros((batch.n_atoms, self.aev.out_dim))
        groups = [(~periodic[batch.conf_index], None)]
        groups += [(batch.conf_index == c, int(c)) for c in periodic.nonzero().squeeze(1).tolist()]
        for atom_mask, c in groups:
            atoms = atom_mask.nonzero().squeeze(1)
            if atoms.numel():
                cell, pbc = (None, None) if c is None else (batch.cell[c].to(dtype), batch.pbc[c])
                aevs = aevs.index_put((atoms,), self._group_aevs(batch, idx, positions, atoms, cell, pbc))
        return aevs

    def _group_aevs(self, batch: Batch, idx: torch.Tensor, positions: torch.Tensor, atoms: torch.Tensor | None,
                    cell: torch.Tensor | None, pbc: torch.Tensor | None) -> torch.Tensor:
        conf, local = batch.conf_index, batch.local_index()
        if atoms is not None:  # a subset of whole configurations, renumbered 0..k-1
            idx, positions, conf, local = idx[atoms], positions[atoms], conf[atoms], local[atoms]
            conf = torch.unique(conf, return_inverse=True)[1]
        n_conf = int(conf.max()) + 1 if conf.numel() else 0
        elem_idxs, coords = layout.pad(idx, positions, conf, local, n_conf)
        if n_conf == 1:  # one system (MD, boxes, clusters): a linear-scaling cell list, the sums in up to 4 chunks
            neighbors = single_system_neighbors(coords, cell, pbc, self.aev.radial.cutoff)
        else:  # a batch of molecules (training): torchani's all pairs, one block per molecule
            neighbors = self.aev.neighborlist(self.aev.radial.cutoff, elem_idxs, coords, None, None)
        aevs = aev_from_neighbors(self.aev, elem_idxs, neighbors, min_chunks=4 if n_conf == 1 else 1)
        if n_conf == 1 and torch.equal(local, torch.arange(local.shape[0], device=local.device)):
            return aevs[0]  # one system with its atoms in order: a view, no copy
        return aevs[conf, local]


def single_system_neighbors(coords: torch.Tensor, cell: torch.Tensor | None, pbc: torch.Tensor | None,
                            cutoff: float) -> Neighbors:
    """torchani's pairs of one system (``coords`` (1, atoms, 3)), each pair once, by vesin's linear-scaling cell
    list; open, periodic and partly periodic cells alike (a partly periodic cell goes through
    :func:`kdframe.cells.regular_cell`). The vectors are computed here from ``coords`` and ``cell`` as autograd sees
    them, so forces and stress are exact.

    vesin (C++) rather than torchani's pure-PyTorch cell list or matscipy: 6-8 ms where they took 53 and 27 ms
    (3,791-atom box, 1 CPU thread; ANI-1x's energy + forces there takes 250-300 ms).
    """
    flat = coords.view(-1, 3)
    positions = flat.detach().cpu().double().numpy()
    periodic = pbc is not None and bool(pbc.any())
    box = np.zeros((3, 3))
    if periodic:
        box = regular_cell(cell.detach().cpu().numpy(), pbc.cpu().numpy(), positions, cutoff)
    search = NeighborList(cutoff=cutoff, full_list=False, n_threads=torch.get_num_threads())
    first, second, shifts = search.compute(positions, box, periodic, "ijS")
    first, second = (torch.as_tensor(x.astype(np.int64), device=coords.device) for x in (first, second))
    vectors = flat.index_select(0, first) - flat.index_select(0, second)
    if periodic:  # vesin's vector is positions[second] - positions[first] + S @ box; torchani's has the other sign
        vectors = vectors - torch.as_tensor(shifts, dtype=coords.dtype, device=coords.device) @ cell
    return Neighbors(torch.stack([first, second]), vectors.norm(dim=-1), vectors)
