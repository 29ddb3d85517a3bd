"""Framework overhead: one training epoch of a HIP-NN model in kdframe vs in hippynn's own loop.

Same graph (kdframe_hippynn.graph.build_graph), same data, batch size, dtype, device and loss form
(RMSE + MAE of energies and forces, L2, hierarchicality); epochs are interleaved so machine noise
hits both alike. Reports the ratio t_hippynn / t_kdframe (goal >= 0.95) and writes a markdown result.

    python benchmarks/hipnn_overhead.py --data bundled:train_pool.h5 --energy xtb.energy --forces xtb.forces
"""

from __future__ import annotations

import numpy as np
import torch

from kdframe.data.reference import fit_reference_energies
from kdframe.plugins import registry

from common import epoch_arguments, native_overhead

HYPER = {"l_max": 0, "n_interaction_layers": 1, "n_atom_layers": 2, "width": 32, "n_sensitivities": 16}


def hippynn_epoch(data, batch_size, device):
    import hippynn
    from hippynn.experiment import assemble_for_training
    from hippynn.experiment.step_functions import get_step_function
    from hippynn.graphs import loss, physics
    from kdframe_hippynn.graph import build_graph
    from kdframe_hippynn.hyperparameters import HipnnHyperparameters

    torch.manual_seed(0)
    species = sorted(set(data.species.tolist()))
    g = build_graph(HipnnHyperparameters(**HYPER), species, 1)
    henergy = g.energies[0]
    henergy.mol_energy.db_name = "T"
    forces = physics.GradientNode("forces", (henergy, g.positions), sign=-1)
    forces.db_name = "F"
    err = lambda node: loss.MSELoss.of_node(node) ** 0.5 + loss.MAELoss.of_node(node)  # noqa: E731
    total = err(henergy.mol_energy) + err(forces) + 0.01 * loss.Mean.of_node(henergy.hierarchicality) \
        + 1e-6 * loss.l2reg(g.network)
    training_modules, db_info = assemble_for_training(total, {"Loss": total})
    n, max_atoms = len(data), int(data.n_atoms.max())
    Z, R, F = np.zeros((n, max_atoms), np.int64), np.zeros((n, max_atoms, 3), np.float32), np.zeros((n, max_atoms, 3), np.float32)
    for c in range(n):
        atoms = slice(data.atom_ptr[c], data.atom_ptr[c + 1])
        k = data.n_atoms[c]
        Z[c, :k], R[c, :k], F[c, :k] = data.species[atoms], data.positions[atoms], data.labels["forces"][atoms]
    T = (data.labels["energy"] - data.element_counts() @ fit_reference_energies(data, "energy"))[:, None].astype(np.float32)
    CELL = np.zeros((n, 3, 3), np.float32)  # open systems (kdframe_hippynn.pairs: zero rows = not periodic)
    database = hippynn.databases.Database({"Z": Z, "R": R, "CELL": CELL, "T": T, "F": F}, seed=0, pin_memory=False,
                                          quiet=True, allow_unfound=True, **db_info)
    database.split_the_rest("train")
    model, loss_module, _ = training_modules
    model.to(device)
    loss_module.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = get_step_function(optimizer)
    n_in = len(database.inputs)

    def epoch():
        model.train()
        for batch in database.make_generator("train", "train", batch_size=batch_size):
            batch = [t.to(device) for t in batch]
            step(optimizer, model, loss_module, batch[:n_in], [t.requires_grad_(False) for t in batch[n_in:]])

    return epoch


def main() -> None:
    args = epoch_arguments(__doc__.split("\n")[0], "hipnn_overhead.md", batch_size=64, repeats=5)
    registry().architectures["hippynn"].prepare()
    print(native_overhead(args, "hipnn_overhead.py", "hippynn", "hippynn", HYPER, hippynn_epoch,
                          regularisers={"hierarchicality": 0.01}))


if __name__ == "__main__":
    main()
