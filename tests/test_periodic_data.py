"""Periodic extxyz data: cells and pbc reach every batch (subsets, training, evaluation), or a clear error."""

from __future__ import annotations

import dataclasses
import textwrap

import ase
import ase.io
import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator

from kdframe.calculator import KdframeCalculator
from kdframe.cli import main
from kdframe.data import read_dataset
from kdframe.data.dataset import concatenate
from kdframe.errors import DataError
from kdframe.plugins import registry
from kdframe.potential import Potential

HIPNN = {"l_max": 1, "n_interaction_layers": 1, "width": 8, "n_atom_layers": 1, "n_sensitivities": 6,
         "dist_soft_max": 4.0, "dist_hard_max": 5.0}
CELL = [[7.0, 0.0, 0.0], [1.2, 6.8, 0.0], [-0.7, 0.9, 7.1]]  # triclinic, narrower than twice the cutoff
WATER = np.array([[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]])
KEYS = {"energy": "energy", "forces": "forces"}


def frames(n: int, seed: int = 0) -> list[ase.Atoms]:
    """Boxes of four waters, labelled by a fixed random HIP-NN through the ASE calculator (energy, forces and, on
    periodic frames, stress); the last frame open."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    reference = Potential(registry().architectures["hippynn"], HIPNN, [1, 8]).double()
    out = []
    for k in range(n):
        centres = (np.array([[0.1, 0.1, 0.1], [0.6, 0.15, 0.45], [0.2, 0.6, 0.7], [0.65, 0.6, 0.2]])
                   + rng.uniform(-0.03, 0.03, (4, 3))) @ np.array(CELL)
        atoms = ase.Atoms("OH2" * 4, positions=np.concatenate([WATER + c for c in centres]), cell=CELL,
                          pbc=k < n - 1)
        atoms.calc = KdframeCalculator(reference)
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if atoms.pbc.all():
            results["stress"] = atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, **results)
        out.append(atoms)
    return out


@pytest.fixture(scope="module")
def periodic_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("periodic") / "water_boxes.xyz"
    ase.io.write(path, frames(16), format="extxyz")
    return path


def test_extxyz_keeps_cells_and_pbc(periodic_file, ani_file, tmp_path):
    data = read_dataset(periodic_file, KEYS)
    written = ase.io.read(periodic_file, index=":")
    assert data.periodic
    np.testing.assert_allclose(data.cell, [a.cell.array for a in written])
    assert data.pbc.tolist() == [[True] * 3] * 15 + [[False] * 3]
    batch = data.batch([3, 15, 0])
    assert batch.pbc.tolist() == [[True] * 3, [False] * 3, [True] * 3]
    torch.testing.assert_close(batch.cell[0], torch.tensor(CELL, dtype=torch.float64))
    assert not data.subset([15]).periodic and data.subset([0, 15]).periodic
    molecular = read_dataset(ani_file, {"energy": "morse.energy"})
    both = concatenate([molecular, data.subset([0, 15])])
    assert both.pbc.tolist() == [[False] * 3] * len(molecular) + [[True] * 3, [False] * 3]
    opened = []
    for a in written:
        copy = a.copy()
        copy.pbc = False
        copy.calc = SinglePointCalculator(copy, **a.calc.results)
        opened.append(copy)
    ase.io.write(tmp_path / "open.xyz", opened, format="extxyz")
    assert read_dataset(tmp_path / "open.xyz", KEYS).content_hash() != data.content_hash()


def test_batches_of_periodic_frames_give_the_calculators_energies(periodic_file):
    """The labels came from the ASE calculator on each frame: the same model on dataset batches reproduces them."""
    data = read_dataset(periodic_file, KEYS)
    torch.manual_seed(0)
    reference = Potential(registry().architectures["hippynn"], HIPNN, [1, 8]).double()
    batch = data.batch(np.arange(len(data)))
    out = reference(batch)
    np.testing.assert_allclose(out["energy"][:, 0].detach().numpy(), data.labels["energy"], rtol=0, atol=1e-6)  # extxyz: 8 decimals
    np.testing.assert_allclose(out["forces"][..., 0].detach().numpy(), data.labels["forces"], rtol=0, atol=1e-5)
    dropped = reference(dataclasses.replace(batch, cell=None, pbc=None), forces=False)["energy"][:-1, 0]
    assert np.abs(dropped.detach().numpy() - data.labels["energy"][:-1]).min() > 1e-4  # the cells matter


TRAIN = """
workflow: train
run_dir: {run_dir}
device: cpu
data:
  train: {{path: {data}, energy: energy, forces: forces}}
  split: {{by: configuration, fractions: {{train: 0.5, valid: 0.25, test: 0.25}}}}
training: {{batch_size: 4, max_epochs: 6, lr: 0.01}}
potential:
  model: {model}
  weights: {{energy: 1, forces: 10}}
"""


def test_training_on_periodic_frames(periodic_file, tmp_path):
    config = tmp_path / "train.yaml"
    model = "{architecture: hippynn, l_max: 0, n_interaction_layers: 1, width: 8, n_sensitivities: 6, " \
            "dist_soft_max: 4.0, dist_hard_max: 5.0}"
    config.write_text(textwrap.dedent(TRAIN.format(run_dir=tmp_path / "run", data=periodic_file, model=model)))
    assert main(["run", str(config), "--quiet"]) == 0
    curve = np.genfromtxt(tmp_path / "run" / "potential" / "metrics.csv", delimiter=",", names=True)
    assert curve["valid_rmseforcesforces"][-1] < curve["valid_rmseforcesforces"][0]


def test_a_non_periodic_architecture_is_refused_before_any_work(periodic_file, tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(textwrap.dedent(TRAIN.format(run_dir=tmp_path / "run", data=periodic_file,
                                                   model="{architecture: toy, width: 4}")))
    assert main(["run", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert ("potential.model.architecture: 'toy' does not handle periodic configurations, which data.train "
            f"({periodic_file}) holds (valid: hippynn, mace, torchani)") in err
    assert not (tmp_path / "run").exists()


def test_periodic_direction_without_a_lattice_vector(tmp_path):
    atoms = ase.Atoms("OH2", positions=WATER, pbc=[True, False, False])
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0)
    ase.io.write(tmp_path / "flat.xyz", [atoms], format="extxyz")
    with pytest.raises(DataError, match=r"flat.xyz: frame 0: periodic along lattice vector 1 \(pbc\) but that "
                                        r"vector is zero"):
        read_dataset(tmp_path / "flat.xyz", {"energy": "energy"})
