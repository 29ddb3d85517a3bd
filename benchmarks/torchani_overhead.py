"""Framework overhead: one training epoch of a TorchANI model in kdframe vs in a plain torchani loop.

The plain loop is the one torchani's training tutorials write: padded (species, coordinates) batches
made once, ``energies = networks(elem_idxs, aev_computer(elem_idxs, coordinates))`` in Hartree, forces
by autograd, Adam. Same AEV and element networks (built by the plugin, seeded alike), data, batch size,
dtype, device and loss form (RMSE + MAE of energies and forces, L2 on weight matrices); epochs are
interleaved so machine noise hits both alike. Reports t_torchani / t_kdframe (goal >= 0.95).

    python benchmarks/torchani_overhead.py --data bundled:train_pool.h5 --energy xtb.energy --forces xtb.forces
"""

from __future__ import annotations

import numpy as np
import torch

from kdframe.data.reference import fit_reference_energies
from kdframe.units import HARTREE_TO_EV

from common import epoch_arguments, native_overhead, native_step, rmse_plus_mae

HYPER = {"aev": "ani1x", "hidden": [64, 48, 32]}


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

    def epoch():
        for i in torch.randperm(len(batches), generator=order).tolist():
            species, coords, forces, energies = batches[i]
            coords = coords.clone().requires_grad_(True)
            predicted = networks(species, aev(species, coords)).squeeze(-1)
            (gradient,) = torch.autograd.grad(predicted.sum(), coords, create_graph=True)
            real = species >= 0
            loss = rmse_plus_mae(predicted - energies) + rmse_plus_mae((-gradient - forces)[real])
            native_step(optimizer, loss, matrices)

    return epoch


def main() -> None:
    args = epoch_arguments(__doc__.split("\n")[0], "torchani_overhead.md", batch_size=64, repeats=5)
    print(native_overhead(args, "torchani_overhead.py", "torchani", "torchani", HYPER, torchani_epoch))


if __name__ == "__main__":
    main()
