"""``MaceEnergyModel``: a mace ``ScaleShiftMACE`` evaluated for every head in one pass.

MACE picks one head per graph (``data["head"]``): the interaction stack is shared
and only the last, non-linear readout depends on the head (``mask_head`` keeps the
hidden units of that head's block). Evaluating MACE once per head would repeat the
whole interaction stack, so :meth:`MaceEnergyModel.forward` runs mace's own
sub-modules in the order ``ScaleShiftMACE.forward`` does, once, and then reads every
head out of the (cheap) readouts. ``plugins/mace/tests/test_plugin_mace.py`` checks the result
against ``ScaleShiftMACE.forward`` head by head, so a change in mace shows up there.
"""

from __future__ import annotations

import torch
from mace.modules.blocks import LinearReadoutBlock
from mace.modules.models import ScaleShiftMACE
from mace.modules.utils import get_edge_vectors_and_lengths

from kdframe.architecture import EnergyModel, ModelOutput
from kdframe.batch import Batch
from kdframe.errors import ConfigError, DataError

from .graph import Graph, NeighbourGraphs
from .hyperparameters import MaceHyperparameters


class MaceEnergyModel(EnergyModel):
    """Batch -> per-atom energies (n_atoms, n_heads) of a multi-head ScaleShiftMACE (E0 = 0 by construction)."""

    def __init__(self, mace: ScaleShiftMACE, hp: MaceHyperparameters, species: list[int], heads: list[str]):
        super().__init__()
        for feature in ("pair_repulsion", "joint_embedding"):
            if hasattr(mace, feature):  # not built by MaceArchitecture; forward() would ignore it
                raise ValueError(f"mace models with {feature} are not supported")
        self.mace = mace
        self.heads = list(heads)
        self.species = list(species)
        # Fused cuequivariance convolutions (built where CUDA was present) have no CPU kernel.
        self.fused_convolutions = any(getattr(block, "conv_fusion", False) for block in mace.interactions)
        # cuequivariance keeps fixed coupling coefficients as buffers named by its backend (torch fallback,
        # fused CUDA kernels): they are rebuilt with the model and not saved, so a model saved on a CPU
        # loads on a GPU machine with fused convolutions and back.
        self.cueq_modules = cueq_polynomial_modules(self) if hp.cuequivariance else []
        self.register_state_dict_post_hook(_drop_cueq_constants)
        self.register_load_state_dict_pre_hook(_restore_cueq_constants)
        table = torch.full((max(species) + 1,), -1, dtype=torch.long)
        table[torch.tensor(species)] = torch.arange(len(species))
        self.register_buffer("z_to_index", table, persistent=False)
        self.graphs = NeighbourGraphs(hp.r_max, skin=hp.graph_skin, cache=hp.cache_graphs,
                                      max_entries=hp.graph_cache_size)

    @property
    def float_dtype(self) -> torch.dtype:
        """The model's dtype (``hp.dtype`` at build; follows a later ``.to(dtype)``); batches are cast to it."""
        return next(self.mace.parameters()).dtype

    def head_index(self, head: str) -> int:
        """MACE's column for a head name; unknown names raise (mace itself would map them to the last head)."""
        if head not in self.heads:
            raise ConfigError("head", f"unknown head {head!r}", self.heads)
        return self.heads.index(head)

    # --- inputs ------------------------------------------------------------------------------
    def node_attrs(self, species: torch.Tensor) -> torch.Tensor:
        """One-hot over the z_table, in the model dtype (mace.tools.to_one_hot uses torch's global default)."""
        index = self.z_to_index[species.clamp(0, self.z_to_index.shape[0] - 1)]
        bad = (index < 0) | (species >= self.z_to_index.shape[0])
        if bool(bad.any()):
            unknown = sorted(set(species[bad].tolist()))
            raise DataError(f"mace: elements {unknown} are outside this model's set {self.species}")
        return torch.nn.functional.one_hot(index, len(self.species)).to(self.float_dtype)

    def edges(self, batch: Batch, positions: torch.Tensor) -> tuple[Graph, torch.Tensor, torch.Tensor]:
        """The graph and its differentiable edge vectors (n_edges, 3) and lengths (n_edges, 1)."""
        graph = self.graphs(batch)
        shifts = self.shifts(batch, graph)
        vectors, lengths = get_edge_vectors_and_lengths(positions, graph.edge_index, shifts)
        return graph, vectors, lengths

    def shifts(self, batch: Batch, graph: Graph) -> torch.Tensor:
        n_edges = graph.edge_index.shape[1]
        if graph.unit_shifts is None or batch.cell is None:
            return batch.positions.new_zeros((n_edges, 3), dtype=self.float_dtype)
        cell = batch.cell.to(self.float_dtype)[graph.edge_conf]  # (n_edges, 3, 3), rows = lattice vectors
        return torch.einsum("ei,eij->ej", graph.unit_shifts.to(self.float_dtype), cell)

    def _check_device(self, batch: Batch) -> None:
        if self.fused_convolutions and batch.positions.device.type != "cuda":
            raise ConfigError(
                "model.cuequivariance", "this model was built on a CUDA machine with fused cuequivariance "
                "convolutions, which run on CUDA only: evaluate on a GPU, or convert it for the CPU with "
                "kdframe_mace.with_cuequivariance(potential, False)"
            )

    # --- evaluation --------------------------------------------------------------------------
    def forward(self, batch: Batch) -> ModelOutput:
        self._check_device(batch)
        positions = batch.positions.to(self.float_dtype)  # differentiable cast at the boundary
        node_attrs = self.node_attrs(batch.species)
        graph, vectors, lengths = self.edges(batch, positions)
        features = self.node_features(node_attrs, graph.edge_index, vectors, lengths)
        atom_energies = self.all_heads(node_attrs, features)
        return ModelOutput(energy=batch.sum_per_conf(atom_energies), atom_energies=atom_energies)

    def node_features(
        self, node_attrs: torch.Tensor, edge_index: torch.Tensor, vectors: torch.Tensor, lengths: torch.Tensor
    ) -> list[torch.Tensor]:
        """Node features after each interaction (the head-independent part of ScaleShiftMACE.forward)."""
        m = self.mace
        node_feats = m.node_embedding(node_attrs)
        edge_attrs = m.spherical_harmonics(vectors)
        edge_feats, cutoff = m.radial_embedding(lengths, node_attrs, edge_index, m.atomic_numbers)
        features = []
        for i, (interaction, product) in enumerate(zip(m.interactions, m.products)):
            node_feats, sc = interaction(
                node_attrs=node_attrs,
                node_feats=node_feats,
                edge_attrs=edge_attrs,
                edge_feats=edge_feats,
                edge_index=edge_index,
                cutoff=cutoff,
                first_layer=(i == 0),
                lammps_class=None,
                lammps_natoms=(0, 0),
            )
            node_feats = product(node_feats=node_feats, sc=sc, node_attrs=node_attrs)
            features.append(node_feats)
        return features

    def all_heads(self, node_attrs: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        """Node energies (n_atoms, n_heads): column h is what ScaleShiftMACE gives with ``head = h``."""
        m = self.mace
        n_atoms, n_heads = node_attrs.shape[0], len(self.heads)
        columns = torch.arange(n_heads, device=node_attrs.device)
        node_es = node_attrs.new_zeros((n_atoms, n_heads))
        for i, readout in enumerate(m.readouts):
            x = features[-1 if len(m.readouts) == 1 else i]
            if n_heads == 1 or isinstance(readout, LinearReadoutBlock):  # head-independent: all columns at once
                node_es = node_es + readout(x)
                continue
            per_head = []  # the non-linear readout masks its hidden layer by head: one cheap call per head
            for h in range(n_heads):
                node_heads = torch.full((n_atoms,), h, dtype=torch.long, device=x.device)
                per_head.append(readout(x, node_heads)[:, h])
            node_es = node_es + torch.stack(per_head, dim=1)
        # ScaleShiftBlock indexes scale/shift by head: index by all columns and broadcast over atoms.
        node_es = m.scale_shift(node_es, columns)
        return m.atomic_energies_fn(node_attrs).to(node_es) + node_es  # E0 = 0 unless set on purpose

    # --- mace's own forward, for checks ------------------------------------------------------
    def mace_inputs(self, batch: Batch, head: str) -> dict[str, torch.Tensor]:
        """The input dict ``ScaleShiftMACE.forward`` takes, every graph on one (validated) head."""
        positions = batch.positions.to(self.float_dtype)
        graph = self.graphs(batch)
        counts = batch.atoms_per_conf()
        ptr = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
        unit_shifts = graph.unit_shifts
        if unit_shifts is None:
            unit_shifts = positions.new_zeros((graph.edge_index.shape[1], 3))
        cell = batch.cell if batch.cell is not None else positions.new_zeros((batch.n_conf, 3, 3))
        return {
            "positions": positions,
            "node_attrs": self.node_attrs(batch.species),
            "edge_index": graph.edge_index,
            "shifts": self.shifts(batch, graph),
            "unit_shifts": unit_shifts.to(self.float_dtype),
            "cell": cell.to(self.float_dtype).reshape(-1, 3),
            "batch": batch.conf_index,
            "ptr": ptr,
            "head": torch.full((batch.n_conf,), self.head_index(head), dtype=torch.long, device=positions.device),
        }

    def mace_node_energy(self, batch: Batch, head: str) -> torch.Tensor:
        """Node energies of one head from ``ScaleShiftMACE.forward`` itself (slower; for tests)."""
        self._check_device(batch)
        out = self.mace(self.mace_inputs(batch, head), training=self.training, compute_force=False)
        return out["node_energy"]


def cueq_polynomial_modules(module: torch.nn.Module) -> list[str]:
    """Names of cuequivariance's SegmentedPolynomial sub-modules: their state is constants only."""
    from cuequivariance_torch import SegmentedPolynomial

    return [name for name, sub in module.named_modules() if isinstance(sub, SegmentedPolynomial)]


def _drop_cueq_constants(module: MaceEnergyModel, state_dict: dict, prefix: str, local_metadata: object) -> None:
    for name in module.cueq_modules:
        for key in [k for k in state_dict if k.startswith(f"{prefix}{name}.")]:
            del state_dict[key]


def _restore_cueq_constants(module: MaceEnergyModel, state_dict: dict, prefix: str, *args: object) -> None:
    for name in module.cueq_modules:
        for key, value in module.get_submodule(name).state_dict().items():
            state_dict[f"{prefix}{name}.{key}"] = value
