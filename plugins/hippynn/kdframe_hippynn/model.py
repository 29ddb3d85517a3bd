"""The kdframe :class:`EnergyModel` around a hippynn ``GraphModule``."""

from __future__ import annotations

from typing import Any

import torch
from hippynn.graphs import GraphModule

from kdframe.architecture import EnergyModel, ModelOutput
from kdframe.batch import Batch

from .pairs import kernels_for_repeated_pairs, periodic_cell, repeats_pairs


class HipnnEnergyModel(EnergyModel):
    """Feeds the padded batch to the graph and stacks the per-head outputs as columns."""

    def __init__(self, graph: GraphModule, n_heads: int, cutoff: float):
        super().__init__()
        self.graph = graph
        self.n_heads = n_heads
        self.cutoff = cutoff
        # HIP-NN-TS layers keep ``cusp_reg`` as a non-tensor ``_extra_state`` entry; it is fixed by
        # build(), so leave it out of saved state (tensors only) and take it from the fresh model on load.
        self.register_state_dict_post_hook(_drop_extra_state)
        self.register_load_state_dict_pre_hook(_restore_extra_state)

    def forward(self, batch: Batch) -> ModelOutput:
        padded = batch.to_padded()
        # The cast is differentiable, so forces still flow back to batch.positions.
        dtype = next(p for p in self.parameters() if p.is_floating_point()).dtype
        positions = padded.positions.to(dtype)
        cell = periodic_cell(batch.cell, batch.pbc, batch.n_conf, positions)
        with kernels_for_repeated_pairs(batch.pbc is not None and repeats_pairs(cell, self.cutoff)):
            outputs = self.graph(padded.species, positions, cell)
        mol_energy, atom_energies, hierarchicality = outputs[0::3], outputs[1::3], outputs[2::3]
        return ModelOutput(
            energy=torch.cat(mol_energy, dim=1),
            # PaddingIndexer keeps real atoms in row-major (conf, atom) order, which is Batch order.
            atom_energies=torch.cat(atom_energies, dim=1),
            # As in hippynn's examples: mean over molecules of each readout's hierarchicality.
            regularisers={"hierarchicality": torch.stack([h.mean() for h in hierarchicality]).sum()},
        )


def _drop_extra_state(module: torch.nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    for key in [k for k in state_dict if k.startswith(prefix) and k.endswith("._extra_state")]:
        del state_dict[key]


def _restore_extra_state(module: torch.nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    for name, sub in module.named_modules(prefix=prefix.rstrip(".")):
        if type(sub).get_extra_state is not torch.nn.Module.get_extra_state:
            state_dict.setdefault(f"{name}._extra_state", sub.get_extra_state())
