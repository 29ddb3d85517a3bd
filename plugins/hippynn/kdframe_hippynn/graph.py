"""The hippynn graph: inputs -> one-hot/padding -> pairs -> HIP-NN -> one HEnergy readout per head.

Kept separate from the kdframe model so hippynn's own training loop can reuse
exactly the same graph (input ``db_name`` s are ``"Z"``, ``"R"`` and ``"CELL"``; see
:mod:`kdframe_hippynn.pairs` for the cell convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hippynn.graphs import GraphModule
from hippynn.graphs.nodes.base import InputNode
from hippynn.graphs.nodes.indexers import OneHotEncoder, PaddingIndexer
from hippynn.graphs.nodes.inputs import CellNode, PositionsNode, SpeciesNode
from hippynn.graphs.nodes.networks import Hipnn, HipnnQuad, HipnnVec
from hippynn.graphs.nodes.targets import HEnergyNode

from .hyperparameters import HipnnHyperparameters
from .pairs import NeighbourPairIndexer
from .sensitivity import BoundedInverseSensitivity

NETWORKS = {0: Hipnn, 1: HipnnVec, 2: HipnnQuad}


@dataclass
class HipnnGraph:
    species: SpeciesNode
    positions: PositionsNode
    cell: CellNode
    network: Hipnn
    energies: list[HEnergyNode]  # one per head, all reading the same network

    @property
    def inputs(self) -> list[InputNode]:
        return [self.species, self.positions, self.cell]

    def module(self) -> GraphModule:
        """A module taking (species, positions, cell): padded (n_conf, max_atoms[, 3]) and (n_conf, 3, 3).

        It returns, head after head: mol_energy (n_conf, 1), atom_energies (n_atoms, 1), hierarchicality (n_conf, 1).
        """
        outputs = [o for e in self.energies for o in (e.mol_energy, e.atom_energies, e.hierarchicality)]
        return GraphModule(self.inputs, outputs)


def build_graph(hp: HipnnHyperparameters, species: Sequence[int], n_heads: int) -> HipnnGraph:
    """A freshly initialised graph for these atomic numbers with ``n_heads`` energy readouts."""
    species_set = [0, *sorted(int(z) for z in species)]
    species_node = SpeciesNode(db_name="Z")
    positions_node = PositionsNode(db_name="R")
    cell_node = CellNode(db_name="CELL")
    encoder = OneHotEncoder("OneHot", species_node, species_set=species_set)
    padder = PaddingIndexer("PaddingIndexer", encoder)
    pairs = NeighbourPairIndexer("PairIndexer", (positions_node, encoder, padder, cell_node), hp.dist_hard_max)
    network = NETWORKS[hp.l_max](
        "HIPNN",
        (padder, pairs),
        module_kwargs=dict(
            possible_species=species_set,
            n_features=hp.width,
            n_sensitivities=hp.n_sensitivities,
            dist_soft_min=hp.dist_soft_min,
            dist_soft_max=hp.dist_soft_max,
            dist_hard_max=hp.dist_hard_max,
            n_interaction_layers=hp.n_interaction_layers,
            n_atom_layers=hp.n_atom_layers,
            sensitivity_type=BoundedInverseSensitivity,
        ),
    )
    # Index-based names: GraphModule orders its sub-modules by node name, so state_dict keys are stable.
    energies = [HEnergyNode(f"HEnergy{h:03d}", network) for h in range(n_heads)]
    return HipnnGraph(species_node, positions_node, cell_node, network, energies)
