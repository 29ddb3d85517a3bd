"""Framework overhead: one training epoch of a MACE model in kdframe vs in mace's own data pipeline.

The mace side is what mace's training tools do: ``AtomicData.from_config`` graphs built once, mace's
``torch_geometric`` DataLoader, ``ScaleShiftMACE.forward(batch, training=True, compute_force=True)``,
Adam. Same model (built by the plugin, seeded alike), data, batch size, dtype, device and loss form
(RMSE + MAE of energies and forces, L2 on weight matrices); epochs interleaved. Reports
t_mace / t_kdframe (goal >= 0.95).

    python benchmarks/mace_overhead.py --data bundled:train_pool.h5 --energy xtb.energy --forces xtb.forces
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from kdframe.config import resolve_path
from kdframe.data import read_dataset
from kdframe.data.reference import fit_reference_energies
from kdframe.plugins import registry

from common import interleaved_epochs, kdframe_epoch, write_epoch_report

HYPER = {"r_max": 5.0, "channels": 16, "max_L": 1, "correlation": 2, "num_interactions": 2, "dtype": "float32"}
WEIGHT_L2 = 1e-6  # kdframe_epoch's weight_l2


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

    def error(residual):
        return residual.pow(2).mean().sqrt() + residual.abs().mean()

    def epoch():
        model.train()
        for batch in loader:
            batch = batch.to(device)
            inputs = {k: (v.to(dtype) if torch.is_floating_point(v) else v) for k, v in batch.to_dict().items()}
            out = model(inputs, training=True, compute_force=True)
            loss = error(out["energy"] - inputs["energy"]) + error(out["forces"] - inputs["forces"]) \
                + WEIGHT_L2 * sum(p.pow(2).sum() for p in matrices)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="bundled:train_pool.h5")
    parser.add_argument("--energy", default="xtb.energy")
    parser.add_argument("--forces", default="xtb.forces")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "mace_overhead.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = read_dataset(resolve_path(args.data, Path.cwd()), {"energy": args.energy, "forces": args.forces})
    with tempfile.TemporaryDirectory() as tmp:
        runners = {"kdframe": kdframe_epoch("mace", HYPER, data, args.batch_size, args.device, tmp),
                   "mace": mace_epoch(data, args.batch_size, args.device)}
        times = interleaved_epochs(runners, args.repeats, args.device)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["mace"] / med["kdframe"]
    text = write_epoch_report(
        args, "mace_overhead.py", "MACE training epoch: kdframe vs mace's own data pipeline",
        f"data: {len(data)} configurations, {int(data.n_atoms.sum())} atoms; model: MACE {HYPER}; "
        "loss RMSE+MAE of E and F", "loop", times,
        f"**Ratio t_mace / t_kdframe = {ratio:.3f}** (goal >= 0.95; above 1 means kdframe is faster).")
    print(text)


if __name__ == "__main__":
    main()
