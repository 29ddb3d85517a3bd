"""Framework overhead: one training epoch of a MACE model in kdframe vs in mace's own data pipeline.

The mace side is what mace's training tools do: ``AtomicData.from_config`` graphs built once, mace's
``torch_geometric`` DataLoader, ``ScaleShiftMACE.forward(batch, training=True, compute_force=True)``,
Adam. Same model (built by the plugin, seeded alike), data, batch size, dtype, device and loss form
(RMSE + MAE of energies and forces, L2 on weight matrices); epochs interleaved. Reports
t_mace / t_kdframe (goal >= 0.95).

    python benchmarks/mace_overhead.py --data bundled:train_pool.h5 --energy xtb.energy --forces xtb.forces
"""

from __future__ import annotations

import torch

from kdframe.data.reference import fit_reference_energies
from kdframe.plugins import registry

from common import epoch_arguments, native_overhead, native_step, rmse_plus_mae

HYPER = {"r_max": 5.0, "channels": 16, "max_L": 1, "correlation": 2, "num_interactions": 2, "dtype": "float32"}


def mace_epoch(data, batch_size, device):
    from mace import data as mace_data
    from mace.tools import AtomicNumberTable, torch_geometric

    architecture = registry().architectures["mace"]
    torch.manual_seed(0)
    elements = data.elements().tolist()
    model = architecture.build(architecture.parse(HYPER), elements, ["energy"]).mace.to(device)
    dtype = next(model.parameters()).dtype
    energies = data.labels["energy"] - data.element_counts() @ fit_reference_energies(data, "energy")
    table = AtomicNumberTable(elements)
    graphs = []
    for c in range(len(data)):
        atoms = slice(data.atom_ptr[c], data.atom_ptr[c + 1])
        config = mace_data.Configuration(
            atomic_numbers=data.species[atoms], positions=data.positions[atoms],
            properties={"energy": energies[c], "forces": data.labels["forces"][atoms]},
            property_weights={"energy": 1.0, "forces": 1.0}, head="energy")
        graphs.append(mace_data.AtomicData.from_config(config, z_table=table, cutoff=HYPER["r_max"], heads=["energy"]))
    loader = torch_geometric.dataloader.DataLoader(graphs, batch_size=batch_size, shuffle=True, drop_last=False,
                                                   generator=torch.Generator().manual_seed(0))
    params = list(model.parameters())
    matrices = [p for p in params if p.dim() > 1]
    optimizer = torch.optim.Adam(params, lr=1e-3)

    def epoch():
        model.train()
        for batch in loader:
            batch = batch.to(device)
            inputs = {k: (v.to(dtype) if torch.is_floating_point(v) else v) for k, v in batch.to_dict().items()}
            out = model(inputs, training=True, compute_force=True)
            loss = rmse_plus_mae(out["energy"] - inputs["energy"]) + rmse_plus_mae(out["forces"] - inputs["forces"])
            native_step(optimizer, loss, matrices)

    return epoch


def main() -> None:
    args = epoch_arguments(__doc__.split("\n")[0], "mace_overhead.md", batch_size=32, repeats=5)
    print(native_overhead(args, "mace_overhead.py", "mace", "mace", HYPER, mace_epoch))


if __name__ == "__main__":
    main()
