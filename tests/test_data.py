import ase
import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from kdframe.data import read_dataset
from kdframe.data.reference import fit_reference_energies
from kdframe.data.splits import split
from kdframe.units import HARTREE_TO_EV


def test_ani_reader_converts_hartree_to_ev(ani_file):
    import h5py

    data = read_dataset(ani_file, {"energy": "morse.energy", "forces": "morse.forces"})
    with h5py.File(ani_file) as f:
        raw = f["water/morse.energy"][()]
        raw_forces = f["water/morse.forces"][()]
    water = data.molecule_names.index("water")
    first = np.flatnonzero(data.molecule == water)[0]
    assert data.labels["energy"][first] == pytest.approx(raw[0] * HARTREE_TO_EV)
    atoms = slice(data.atom_ptr[first], data.atom_ptr[first + 1])
    assert np.allclose(data.labels["forces"][atoms], raw_forces[0] * HARTREE_TO_EV)
    assert len(data) == 48 and data.molecule_names == sorted(data.molecule_names)


def test_extxyz_reader(tmp_path):
    frames = []
    for k in range(3):
        atoms = ase.Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93 + 0.01 * k, 0]])
        atoms.calc = SinglePointCalculator(atoms, energy=-2079.0 + k, forces=np.full((3, 3), k))
        frames.append(atoms)
    ase.io.write(tmp_path / "w.xyz", frames, format="extxyz")
    data = read_dataset(tmp_path / "w.xyz", {"energy": "energy", "forces": "forces"})
    assert len(data) == 3 and np.allclose(data.labels["energy"], [-2079, -2078, -2077])
    assert data.labels["forces"].shape == (9, 3)


def test_splits_are_seeded_disjoint_and_by_molecule(ani_file):
    data = read_dataset(ani_file, {"energy": "morse.energy"})
    fractions = {"train": 0.5, "valid": 0.25, "test": 0.25}
    a, b = split(data, fractions, seed=3), split(data, fractions, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert sorted(np.concatenate(list(a.values()))) == list(range(len(data)))
    by_mol = split(data, fractions, seed=3, by="molecule")
    owners = [set(data.molecule[idx]) for idx in by_mol.values()]
    assert all(not (owners[i] & owners[j]) for i in range(3) for j in range(i + 1, 3))


def test_a_split_seed_fixes_the_split_apart_from_the_run_seed(tmp_path, ani_file):
    from test_run_state import _config

    from kdframe.workflows.base import Run, load_config

    def splits(run_seed: int, split_seed: str = "") -> dict[str, np.ndarray]:
        config = _config(tmp_path, ani_file, **{"seed: 0": f"seed: {run_seed}", "forces: morse.forces}\n":
                                                 "forces: morse.forces}\n  split: {" + split_seed + "}\n"})
        workflow, parsed = load_config(config)
        with Run(parsed, config, workflow, progress=False) as run:
            return run.splits

    def same(a, b) -> bool:
        return all(np.array_equal(a[k], b[k]) for k in a)

    assert not same(splits(1), splits(2))  # by default the run's seed draws the split
    assert same(splits(1, "seed: 5"), splits(2, "seed: 5")) and same(splits(1, "seed: 5"), splits(5))
    assert same(splits(1, "seed: 0"), splits(0))  # 0 is a seed, not "unset"


def test_reference_energies_fit_composition(ani_file):
    data = read_dataset(ani_file, {"energy": "morse.energy"})
    ref = fit_reference_energies(data, "energy")
    residual = data.labels["energy"] - data.element_counts() @ ref
    assert np.abs(residual).max() < 0.05 * np.abs(data.labels["energy"]).min()
    assert ref[1] < 0 and ref[8] < ref[6]


def test_missing_labels_are_nan_and_ignored_by_reference_fit(tmp_path):
    from toy import write_ani_file

    write_ani_file(tmp_path / "m.h5", missing_every=3)
    data = read_dataset(tmp_path / "m.h5", {"energy": "morse.energy"})
    assert np.isnan(data.labels["energy"]).sum() == 16
    assert np.isfinite(fit_reference_energies(data, "energy")).all()


def test_labelled_finds_configurations_with_any_of_the_labels(tmp_path):
    from toy import write_ani_file

    write_ani_file(tmp_path / "m.h5", missing_every=3)
    data = read_dataset(tmp_path / "m.h5", {"energy": "morse.energy"})
    energy = ~np.isnan(data.labels["energy"])
    np.testing.assert_array_equal(data.labelled(["energy"]), energy)
    forces = np.full((len(data.species), 3), np.nan)
    c = int(np.flatnonzero(~energy)[0])
    forces[data.atom_ptr[c]] = 0.0  # one atom of an energy-less configuration carries a force
    data = data.with_labels(f=forces)
    expected = energy.copy()
    expected[c] = True
    np.testing.assert_array_equal(data.labelled(["energy", "f"]), expected)
    assert data.labelled(["f"]).sum() == 1


def test_atomic_writes_follow_the_umask_and_leave_nothing_behind(tmp_path):
    """Files kdframe writes (models, reports, knowledge) get the permissions a plain open() would give, not
    mkstemp's 0600, so a group sharing a run directory can read them; a failed write leaves the old file alone."""
    import os
    import stat

    from kdframe.io import atomic_write, atomic_write_text

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "report.md", "first")
        assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o640

        def fail(f):
            f.write(b"half")
            raise OSError("disk full")

        with pytest.raises(OSError, match="disk full"):
            atomic_write(tmp_path / "report.md", fail)
    finally:
        os.umask(old)
    assert (tmp_path / "report.md").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_atomic_writes_can_read_back_what_they_wrote(tmp_path):
    """h5py reads its own metadata back from the file object once a file grows (a sampler appending to a 10 MB
    file crashed with ``UnsupportedOperation: read`` on a write-only one), so the temporary file is opened for both."""
    from kdframe.io import atomic_write

    def write_then_read(f):
        f.write(b"header")
        f.seek(0)
        assert f.read() == b"header"

    atomic_write(tmp_path / "data.h5", write_then_read)
    assert (tmp_path / "data.h5").read_bytes() == b"header"
