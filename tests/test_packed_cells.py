"""Packed format 2: cells, pbc and origins per configuration round-trip; format-1 files are still read."""

import h5py
import numpy as np
import pytest
import torch

from kdframe.data import packed, read_dataset
from kdframe.data.dataset import Dataset

WATER = np.array([[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]])
CELL = np.array([[7.0, 0.0, 0.0], [1.2, 6.8, 0.0], [-0.7, 0.9, 7.1]])


def _mixed(tmp_path, blocks=None):
    """Two open waters (one molecule), two periodic boxes of four waters, one slab; labels on all."""
    rng = np.random.default_rng(0)
    writer = packed.PackedWriter(tmp_path / "mixed.h5", {"energy": "conf", "forces": "atom"}, attrs={"note": "test"})
    rows = []  # (name, species, positions (k, n, 3), energy, forces, cell, pbc, origins)
    open_pos = WATER + rng.normal(0, 0.05, (2, 3, 3))
    rows.append(("water", np.array([8, 1, 1]), open_pos, rng.normal(size=2), rng.normal(size=(2, 3, 3)), None, None,
                 ["conf", "rattle:0.05"]))
    box_pos = np.concatenate([WATER + c for c in rng.uniform(0, 6, (4, 3))])[None] + rng.normal(0, 0.01, (2, 12, 3))
    rows.append(("box", np.tile([8, 1, 1], 4), box_pos, rng.normal(size=2), rng.normal(size=(2, 12, 3)),
                 np.stack([CELL, 1.1 * CELL]), None, "box:0.95"))
    rows.append(("slab", np.tile([8, 1, 1], 4), box_pos[:1] + 0.1, np.array([np.nan]), np.full((1, 12, 3), np.nan),
                 CELL, np.array([True, True, False]), ["slab"]))
    rows.append(("water", np.array([8, 1, 1]), open_pos[:1] * 1.01, np.array([0.5]), np.ones((1, 3, 3)), None, None,
                 None))
    for name, z, xyz, e, f, cell, pbc, origin in rows:
        writer.add(name, z, xyz, {"energy": e, "forces": f}, cell=cell, pbc=pbc, origin=origin)
    return writer.close(), rows


def _in_memory(rows) -> Dataset:
    species, positions, ptr, molecule, energy, forces, cells, pbcs = [], [], [0], [], [], [], [], []
    names = list(dict.fromkeys(r[0] for r in rows))
    for name, z, xyz, e, f, cell, pbc, _ in rows:
        for c in range(len(xyz)):
            species.append(z)
            positions.append(xyz[c])
            ptr.append(ptr[-1] + len(z))
            molecule.append(names.index(name))
            energy.append(e[c])
            forces.append(f[c])
            p = np.zeros(3, bool) if cell is None else (np.ones(3, bool) if pbc is None else pbc)
            cells.append(np.zeros((3, 3)) if cell is None else (cell if cell.ndim == 2 else cell[c]))
            pbcs.append(p)
    return Dataset(np.concatenate(species), np.concatenate(positions), np.array(ptr), np.array(molecule), names,
                   {"energy": np.array(energy), "forces": np.concatenate(forces)}, "mixed",
                   np.array(cells), np.array(pbcs))


def test_cells_pbc_species_labels_and_origins_round_trip(tmp_path):
    path, rows = _mixed(tmp_path)
    assert packed.is_packed(path)
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == packed.FORMAT == "kdframe-packed-2" and f.attrs["note"] == "test"
    data = read_dataset(path, {"energy": "energy", "forces": "forces"})
    memory = _in_memory(rows)
    assert isinstance(data, packed.PackedDataset) and data.periodic and len(data) == len(memory) == 6
    assert data.molecule_names == ["water", "box", "slab"] and data.molecule.tolist() == [0, 0, 1, 1, 2, 0]
    assert data.origin.tolist() == ["conf", "rattle:0.05", "box:0.95", "box:0.95", "slab", ""]
    np.testing.assert_array_equal(data.cell, memory.cell)
    np.testing.assert_array_equal(data.pbc, memory.pbc)
    assert data.pbc.tolist()[:2] == [[False] * 3] * 2 and data.pbc.tolist()[4] == [True, True, False]
    for confs in ([0, 1, 2, 3, 4, 5], [4, 0, 3], [5]):
        a, b = memory.batch(confs), data.batch(confs)
        assert torch.equal(a.species, b.species) and torch.equal(a.positions, b.positions)
        assert torch.equal(a.cell, b.cell) and torch.equal(a.pbc, b.pbc)
        for name in ("energy", "forces"):
            torch.testing.assert_close(a.labels[name], b.labels[name], rtol=0, atol=0, equal_nan=True)
    molecular = data.subset([0, 1, 5])
    assert not molecular.periodic and molecular.cell is None and molecular.batch([0, 1]).cell is None
    assert data.subset([1, 2]).periodic and data.subset([1, 2]).batch([0]).pbc.tolist() == [[False] * 3]
    assert "2 periodic" not in packed.describe(path) and "3 periodic" in packed.describe(path)
    assert "origins: conf 1, rattle 1, box 2, slab 1, - 1" in packed.describe(path)


def test_cells_change_the_content_hash_and_molecular_files_have_no_cell(tmp_path, ani_file):
    path, rows = _mixed(tmp_path)
    other = packed.PackedWriter(tmp_path / "other.h5", {"energy": "conf", "forces": "atom"})
    for name, z, xyz, e, f, cell, pbc, origin in rows:
        other.add(name, z, xyz, {"energy": e, "forces": f}, cell=None if cell is None else cell * 1.001, pbc=pbc,
                  origin=origin)
    other.close()
    keys = {"energy": "energy"}
    assert read_dataset(path, keys).content_hash() != read_dataset(tmp_path / "other.h5", keys).content_hash()
    molecular = packed.pack_ani(ani_file, tmp_path / "mol.h5")
    with h5py.File(molecular, "r") as f:
        assert "cell" not in f and "pbc" not in f and "origin" not in f
    data = read_dataset(molecular, {"energy": "morse.energy"})
    assert not data.periodic and data.batch([0, 1]).cell is None and set(data.origin) == {""}


def test_format_1_files_are_still_read(tmp_path, ani_file):
    """A format-1 file is a format-2 file without cells and origins; the content hash is unchanged."""
    new = packed.pack_ani(ani_file, tmp_path / "new.h5")
    old = tmp_path / "old.h5"
    old.write_bytes(new.read_bytes())
    with h5py.File(old, "r+") as f:
        f.attrs["format"] = "kdframe-packed-1"
    keys = {"energy": "morse.energy", "forces": "morse.forces"}
    assert packed.is_packed(old)
    a, b = read_dataset(old, keys), read_dataset(new, keys)
    assert a.content_hash() == b.content_hash() and not a.periodic
    batch_a, batch_b = a.batch([0, 7, 3]), b.batch([0, 7, 3])
    assert torch.equal(batch_a.positions, batch_b.positions) and batch_a.cell is None
    torch.testing.assert_close(batch_a.labels["forces"], batch_b.labels["forces"])


def test_a_file_without_labels_and_bad_cells(tmp_path):
    writer = packed.PackedWriter(tmp_path / "bare.h5", {})
    writer.add("w", np.array([8, 1, 1]), WATER[None], {}, origin="conf")
    path = writer.close()
    data = packed.PackedDataset.open(path, {})
    assert len(data) == 1 and data.batch([0]).labels == {} and data.origin.tolist() == ["conf"]
    writer = packed.PackedWriter(tmp_path / "bad.h5", {})
    with pytest.raises(ValueError, match="pbc without a cell"):
        writer.add("w", np.array([8, 1, 1]), WATER[None], {}, pbc=np.ones(3, bool))
    with pytest.raises(ValueError, match="2 origins for 1"):
        writer.add("w", np.array([8, 1, 1]), WATER[None], {}, origin=["a", "b"])
    writer.abort()
