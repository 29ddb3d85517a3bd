"""Packed (larger than memory) datasets: same batches as the ANI file, block-shuffled epochs, bounded memory."""

import textwrap

import numpy as np
import pytest
import torch

from kdframe.cli import main
from kdframe.data import packed, read_dataset
from kdframe.data.reference import fit_reference_energies
from kdframe.errors import DataError

KEYS = {"energy": "morse.energy", "forces": "morse.forces"}


@pytest.fixture
def packed_file(tmp_path, ani_file):
    return packed.pack_ani(ani_file, tmp_path / "packed.h5")


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 5 configurations and windows of 2 blocks, so the 48 test configurations span many blocks."""
    monkeypatch.setattr(packed, "BLOCK_CONFS", 5)
    monkeypatch.setattr(packed, "WINDOW", 2)


def _same_batch(a, b):
    assert torch.equal(a.species, b.species) and torch.equal(a.conf_index, b.conf_index)
    assert torch.allclose(a.positions, b.positions, rtol=0, atol=0)
    assert a.labels.keys() == b.labels.keys()
    for name in a.labels:
        assert torch.allclose(a.labels[name], b.labels[name], rtol=1e-15, atol=0, equal_nan=True), name


def test_packed_batches_equal_the_ani_files(ani_file, packed_file, small_blocks):
    memory, lazy = read_dataset(ani_file, KEYS), read_dataset(packed_file, KEYS)
    assert isinstance(lazy, packed.PackedDataset) and len(lazy) == len(memory)
    confs = np.random.default_rng(0).permutation(len(memory))[:13]  # across blocks, in any order
    _same_batch(memory.batch(confs), lazy.batch(confs))
    sub_memory, sub_lazy = memory.subset(confs[3:]), lazy.subset(confs[3:])
    _same_batch(sub_memory.batch([4, 0, 2]), sub_lazy.batch([4, 0, 2]))
    for name in KEYS:  # whole-view labels (evaluation reads them) in the view's order
        np.testing.assert_array_equal(sub_memory.labels[name], sub_lazy.labels[name])
    np.testing.assert_array_equal(memory.element_counts(), lazy.element_counts())
    np.testing.assert_array_equal(memory.labelled(["forces"]), lazy.labelled(["forces"]))
    np.testing.assert_allclose(fit_reference_energies(memory, "energy"), fit_reference_energies(lazy, "energy"))
    assert lazy.elements().tolist() == memory.elements().tolist()


def test_shuffled_epochs_visit_every_configuration_once_from_few_blocks(packed_file, small_blocks):
    data = read_dataset(packed_file, KEYS).subset(np.arange(2, 34))
    epochs = [list(data.batch_indices(4, True, torch.Generator().manual_seed(s))) for s in (0, 0, 1)]
    assert [b.tolist() for b in epochs[0]] == [b.tolist() for b in epochs[1]]  # seeded
    assert np.concatenate(epochs[0]).tolist() != np.concatenate(epochs[2]).tolist()
    for batches in epochs:
        assert sorted(np.concatenate(batches).tolist()) == list(range(32))
        for confs in batches:  # a batch draws on at most two windows of blocks
            assert len(np.unique(data.confs[confs] // packed.BLOCK_CONFS)) <= 2 * packed.WINDOW
    for confs in epochs[2]:
        data.batch(confs, ["energy", "forces"])
    assert 0 < len(data.store.blocks) <= 2 * packed.WINDOW  # memory bounded by the window, not the file


def test_missing_labels_stay_missing(tmp_path):
    from toy import write_ani_file

    write_ani_file(tmp_path / "m.h5", missing_every=2)
    path = packed.pack_ani(tmp_path / "m.h5", tmp_path / "m.packed.h5")
    data = read_dataset(path, {"energy": "morse.energy"})
    assert np.isnan(data.labels["energy"][::2]).all() and not np.isnan(data.labels["energy"][1::2]).any()
    assert data.labelled(["energy"]).tolist() == [False, True] * (len(data) // 2)


def test_per_atom_scalars_are_packed_too(tmp_path, ani_file):
    """A (k, n) key of an ANI file (e.g. per-atom energies, Hartree) is packed per atom, in eV, not dropped."""
    import h5py

    from kdframe.units import HARTREE_TO_EV

    with h5py.File(ani_file, "a") as f:
        for group in f.values():
            k, n = group["coordinates"].shape[:2]
            group["x.atom_energies"] = np.arange(k * n, dtype=float).reshape(k, n) * 1e-3
    path = packed.pack_ani(ani_file, tmp_path / "p.h5")
    keys = {"a": "x.atom_energies", "forces": "morse.forces"}
    expected, got = read_dataset(ani_file, keys), read_dataset(path, keys)
    assert got.labels["a"].shape == (int(got.n_atoms.sum()),)
    assert np.allclose(got.labels["a"], expected.labels["a"], rtol=1e-15, atol=0)
    assert expected.labels["a"].max() > 1e-3 * HARTREE_TO_EV  # read as Hartree and converted, as energies are
    assert np.allclose(got.labels["forces"], expected.labels["forces"], rtol=1e-15, atol=0)


def test_spreads_are_converted_as_their_quantities_are(tmp_path, ani_file, capsys):
    """Ensemble spreads of energies and forces in a Hartree ANI file are packed in eV (they were kept in Hartree: a
    confidence scale in eV/Å then weighed the packed copy differently from the file read directly)."""
    import h5py

    with h5py.File(ani_file, "a") as f:
        for group in f.values():
            k, n = group["coordinates"].shape[:2]
            group["x.forces_std"] = np.linspace(1e-3, 2e-2, k)
            group["x.forces_std_atoms"] = np.full((k, n), 1e-2)
            group["x.t1_diagnostic"] = np.full(k, 0.01)
    path = packed.pack_ani(ani_file, tmp_path / "p.h5")
    keys = {"s": "x.forces_std", "a": "x.forces_std_atoms"}
    expected, got = read_dataset(ani_file, keys), read_dataset(path, keys)
    for label in keys:
        assert np.allclose(got.labels[label], expected.labels[label], rtol=1e-15, atol=0), label
    assert np.allclose(read_dataset(path, {"t": "x.t1_diagnostic"}).labels["t"], 0.01)  # not an energy: kept
    assert main(["data", "info", str(path)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    median, p90, p99 = np.percentile(expected.labels["s"], [50, 90, 99])
    assert f"spread: median {median:.3g}, 90th percentile {p90:.3g}, 99th {p99:.3g} eV/Å" in lines["x.forces_std"]
    assert "spread" not in lines["x.t1_diagnostic"] + lines["x.forces_std_atoms"] + lines["morse.energy"]


def test_packed_file_errors_name_the_key_and_the_workflow(tmp_path, packed_file):
    with pytest.raises(DataError, match=r"key 'morse.hessian' \(for 'hessian'\) not found \(available: morse.energy, morse.forces\)"):
        read_dataset(packed_file, {"hessian": "morse.hessian"})
    with pytest.raises(DataError, match="packed file is in eV"):
        read_dataset(packed_file, KEYS, units="hartree")
    config = tmp_path / "ekd.yaml"
    config.write_text(textwrap.dedent(f"""
        workflow: ekd
        run_dir: {tmp_path / 'run'}
        data: {{train: {{path: {packed_file}, energy: morse.energy}}}}
        teachers: {{train: {{count: 2, model: {{architecture: toy, width: 4}}}}}}
        student: {{model: {{architecture: toy, width: 4}}}}
    """))
    assert main(["run", str(config), "--quiet"]) == 2


TRAIN = """
workflow: train
run_dir: {run_dir}
device: cpu
data:
  train: {{path: {data}, energy: morse.energy, forces: morse.forces}}
training: {{batch_size: 4, max_epochs: 4, lr: 0.003}}
potential:
  model: {{architecture: toy, width: 8}}
  weights: {{energy: 1, forces: 10}}
"""


def test_train_workflow_streams_a_packed_file(tmp_path, packed_file, small_blocks, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(textwrap.dedent(TRAIN.format(run_dir=tmp_path / "run", data=packed_file)))
    assert main(["run", str(config), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| potential |" in out
    curve = np.genfromtxt(tmp_path / "run" / "potential" / "metrics.csv", delimiter=",", names=True)
    assert curve["valid_rmseforcesforces"][-1] < curve["valid_rmseforcesforces"][0]


def test_pack_and_info_commands(tmp_path, ani_file, capsys):
    target = tmp_path / "p.h5"
    assert main(["data", "pack", str(ani_file), str(target)]) == 0
    assert main(["data", "info", str(target)]) == 0
    out = capsys.readouterr().out
    assert f"{target}: 48 conformations" in out and "packed (morse), 4 molecules, 48 conformations" in out
    assert "morse.forces" in out and "48/48" in out
    assert main(["data", "pack", str(tmp_path / "absent.h5"), str(target)]) == 2
