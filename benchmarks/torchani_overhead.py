"""Framework overhead: one training epoch of a TorchANI model in kdframe vs in a plain torchani loop.

The plain loop is the one torchani's training tutorials write: padded (species, coordinates) batches
made once, ``energies = networks(elem_idxs, aev_computer(elem_idxs, coordinates))`` in Hartree, forces
by autograd, Adam. Same AEV and element networks (built by the plugin, seeded alike), data, batch size,
dtype, device and loss form (RMSE + MAE of energies and forces, L2 on weight matrices); epochs are
interleaved so machine noise hits both alike. Reports t_torchani / t_kdframe (goal >= 0.95).

    python benchmarks/torchani_overhead.py --data bundled:train_pool.h5 --energy xtb.energy --forces xtb.forces
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
from kdframe.units import HARTREE_TO_EV

from common import interleaved_epochs, kdframe_epoch, write_epoch_report

HYPER = {"aev": "ani1x", "hidden": [64, 48, 32]}
WEIGHT_L2 = 1e-6  # kdframe_epoch's weight_l2


def torchani_epoch(data, batch_size, device):
    from torchani.nn import ANINetworks

    from kdframe_torchani.hyperparameters import AniHyperparameters
    from kdframe_torchani.model import AniModel

    torch.manual_seed(0)
    built = AniModel(AniHyperparameters(**HYPER), data.elements().tolist(), ["energy"]).to(device)
    aev, networks = built.aev, ANINetworks(dict(built.networks))
    params = list(networks.parameters())
    matrices = [p for p in params if p.dim() > 1]
    target = (data.labels["energy"] - data.element_counts() @ fit_reference_energies(data, "energy")) / HARTREE_TO_EV
    index = built.index_of.cpu().numpy()
    batches = []  # padded tensors made once, as torchani's dataset loaders hand them out
    for start in range(0, len(data), batch_size):
        confs = np.arange(start, min(start + batch_size, len(data)))
        width = int(data.n_atoms[confs].max())
        species = np.full((len(confs), width), -1, np.int64)
        coords, forces = np.zeros((len(confs), width, 3), np.float32), np.zeros((len(confs), width, 3), np.float32)
        for row, c in enumerate(confs):
            atoms, k = slice(data.atom_ptr[c], data.atom_ptr[c + 1]), data.n_atoms[c]
            species[row, :k] = index[data.species[atoms]]
            coords[row, :k], forces[row, :k] = data.positions[atoms], data.labels["forces"][atoms] / HARTREE_TO_EV
        batches.append([torch.from_numpy(a).to(device) for a in (species, coords, forces, target[confs].astype(np.float32))])
    optimizer = torch.optim.Adam(params, lr=1e-3)
    order = torch.Generator().manual_seed(0)

    def error(residual):
        return residual.pow(2).mean().sqrt() + residual.abs().mean()

    def epoch():
        for i in torch.randperm(len(batches), generator=order).tolist():
            species, coords, forces, energies = batches[i]
            coords = coords.clone().requires_grad_(True)
            predicted = networks(species, aev(species, coords)).squeeze(-1)
            (gradient,) = torch.autograd.grad(predicted.sum(), coords, create_graph=True)
            real = species >= 0
            loss = error(predicted - energies) + error((-gradient - forces)[real]) \
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
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "torchani_overhead.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = read_dataset(resolve_path(args.data, Path.cwd()), {"energy": args.energy, "forces": args.forces})
    with tempfile.TemporaryDirectory() as tmp:
        runners = {"kdframe": kdframe_epoch("torchani", HYPER, data, args.batch_size, args.device, tmp),
                   "torchani": torchani_epoch(data, args.batch_size, args.device)}
        times = interleaved_epochs(runners, args.repeats, args.device)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["torchani"] / med["kdframe"]
    text = write_epoch_report(
        args, "torchani_overhead.py", "TorchANI training epoch: kdframe vs a plain torchani loop",
        f"data: {len(data)} configurations, {int(data.n_atoms.sum())} atoms; model: TorchANI {HYPER}; float32; "
        "loss RMSE+MAE of E and F", "loop", times,
        f"**Ratio t_torchani / t_kdframe = {ratio:.3f}** (goal >= 0.95; above 1 means kdframe is faster).")
    print(text)


if __name__ == "__main__":
    main()
