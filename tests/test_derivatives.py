import numpy as np
import torch

from kdframe import derivatives
from kdframe.data import read_dataset
from kdframe.plugins import registry
from kdframe.potential import Potential


def _model():
    torch.manual_seed(0)
    return Potential(registry().architectures["toy"], {"width": 8}, [1, 6, 7, 8], ["a", "b"]).double()


def test_forces_equal_finite_differences(ani_file):
    model = _model()
    batch = read_dataset(ani_file, {"energy": "morse.energy"}).batch(np.array([0, 20]))
    forces = model(batch)["forces"]
    assert forces.shape == (batch.n_atoms, 3, 2)
    h = 1e-5
    for atom, axis in [(0, 0), (3, 2), (8, 1)]:
        plus, minus = batch.positions.detach().clone(), batch.positions.detach().clone()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        e_plus = model(type(batch)(batch.species, plus, batch.conf_index, batch.n_conf), forces=False)["energy"]
        e_minus = model(type(batch)(batch.species, minus, batch.conf_index, batch.n_conf), forces=False)["energy"]
        fd = -(e_plus - e_minus).sum(0) / (2 * h)
        assert torch.allclose(forces[atom, axis], fd, rtol=1e-6, atol=1e-8)


def test_hessian_vector_product_equals_finite_difference_of_forces(ani_file):
    model = _model()
    batch = read_dataset(ani_file, {"energy": "morse.energy"}).batch(np.array([5, 30]))
    v = torch.randn(batch.n_atoms, 3, dtype=torch.float64)
    batch.positions.requires_grad_(True)
    force = model(batch, create_graph=True)["forces"][..., 0]
    hv = derivatives.hessian_vector_product(force, batch.positions, v, create_graph=False)
    h = 1e-5
    shifted = lambda s: model(type(batch)(batch.species, batch.positions.detach() + s * h * v, batch.conf_index,
                                          batch.n_conf))["forces"][..., 0]
    fd = -(shifted(1) - shifted(-1)) / (2 * h)
    assert torch.allclose(hv, fd, rtol=1e-5, atol=1e-7)


def test_energy_is_sum_of_atom_energies_with_reference(ani_file):
    model = _model()
    model.reference_energies[1] = torch.tensor([-13.0, -13.5], dtype=torch.float64)
    batch = read_dataset(ani_file, {"energy": "morse.energy"}).batch(np.arange(6))
    out = model(batch, forces=False)
    assert torch.allclose(out["energy"], batch.sum_per_conf(out["atom_energies"]))
