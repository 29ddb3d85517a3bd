import numpy as np
import torch

from kdframe.batch import Batch
from kdframe.data import read_dataset


def test_padded_round_trip(ani_file):
    data = read_dataset(ani_file, {"energy": "morse.energy"})
    batch = data.batch(np.array([0, 13, 30, 47]))
    padded = batch.to_padded()
    assert padded.species.shape == (4, 6)
    assert int(padded.mask.sum()) == batch.n_atoms
    back = Batch.from_padded(padded.species, padded.positions)
    assert torch.equal(back.species, batch.species)
    assert torch.equal(back.positions, batch.positions)
    assert torch.equal(back.conf_index, batch.conf_index)


def test_padded_positions_stay_differentiable(ani_file):
    batch = read_dataset(ani_file, {"energy": "morse.energy"}).batch(np.arange(5))
    batch.positions.requires_grad_(True)
    (grad,) = torch.autograd.grad(batch.to_padded().positions.pow(2).sum(), batch.positions)
    assert torch.allclose(grad, 2 * batch.positions)


def test_batch_holds_configurations_in_order(ani_file):
    data = read_dataset(ani_file, {"energy": "morse.energy", "forces": "morse.forces"})
    confs = np.array([40, 2, 17])
    batch = data.batch(confs)
    for k, c in enumerate(confs):
        atoms = slice(data.atom_ptr[c], data.atom_ptr[c + 1])
        assert np.array_equal(batch.positions[batch.conf_index == k].numpy(), data.positions[atoms])
        assert np.array_equal(batch.labels["forces"][batch.conf_index == k].numpy(), data.labels["forces"][atoms])
    assert np.array_equal(batch.labels["energy"].numpy(), data.labels["energy"][confs])
