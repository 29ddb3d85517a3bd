"""Bad data files, splits and data commands: one clear error naming the file, group, conformation and key
(or, where the input is valid, a correct result), and nothing written or damaged before the error.

Each test names, in its docstring, what happened before its fix.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import ase
import ase.io
import h5py
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from kdframe.cli import main
from kdframe.config import SplitSpec, validate
from kdframe.data import read_dataset
from kdframe.data.packed import pack_ani
from kdframe.data.splits import split
from kdframe.errors import ConfigError, DataError
from kdframe.labeler import Labeler
from kdframe.labelling import label_file, select_items
from kdframe.units import HARTREE_TO_EV

WATER_Z = np.array([8, 1, 1])
WATER_XYZ = np.array([[0.0, 0.0, 0.12], [0.0, 0.76, -0.47], [0.0, -0.76, -0.47]])
METHANE_Z = np.array([6, 1, 1, 1, 1])
METHANE_XYZ = np.array([[0.0, 0.0, 0.0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63],
                        [0.63, -0.63, -0.63]])
TOTALS = {"water": -76.4, "methane": -40.5}  # Hartree, all-electron (DFT / CCSD(T) scale)


def write_ani(path: Path, n_conf: int = 4, scale: float = 1.0, edit=None, seed: int = 0) -> Path:
    """Water and methane, ``x.energy`` = total energy (Hartree) times ``scale``, ``x.forces``; ``edit(name, group
    arrays)`` may change the arrays of a group before they are written."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        for name, (z, xyz) in {"water": (WATER_Z, WATER_XYZ), "methane": (METHANE_Z, METHANE_XYZ)}.items():
            arrays = {"atomic_numbers": z, "coordinates": xyz + rng.normal(0, 0.02, (n_conf, *xyz.shape)),
                      "x.energy": (TOTALS[name] + rng.normal(0, 0.01, n_conf)) * scale,
                      "x.forces": rng.normal(0, 0.01, (n_conf, len(z), 3))}
            if edit:
                arrays = edit(name, arrays)
            g = f.create_group(name)
            for key, value in arrays.items():
                g[key] = value
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli_error(capsys, *argv) -> str:
    assert main(list(map(str, argv))) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdframe: error: ") and "Traceback" not in err and err.count("\n") == 1
    return err


KEYS = {"energy": "x.energy", "forces": "x.forces"}


# ----------------------------------------------------------------------------- units


def test_ev_file_read_as_auto_is_refused(tmp_path, capsys):
    """Before: an ANI file already in eV, read with units: auto, was multiplied by 27.2 (a table E of 281 kcal/mol).
    Now: energies that read as Hartree are ~27 times the free atoms' total energy are refused; units: ev reads it."""
    path = write_ani(tmp_path / "ev.h5", scale=HARTREE_TO_EV)
    with pytest.raises(DataError, match=r"ev\.h5: key 'x\.energy' \(units: auto\): .* look like eV .*units: ev"):
        read_dataset(path, KEYS)
    data = read_dataset(path, KEYS, units="ev")
    with h5py.File(path) as f:
        assert data.labels["energy"][0] == pytest.approx(f["methane/x.energy"][0])
    hartree = read_dataset(write_ani(tmp_path / "ha.h5"), KEYS)  # the same file in Hartree: read as it was
    assert np.allclose(hartree.labels["energy"], data.labels["energy"])
    err = cli_error(capsys, "data", "pack", path, tmp_path / "p.h5")
    assert "look like eV" in err and not (tmp_path / "p.h5").exists() and not list(tmp_path.glob(".*tmp"))
    assert main(["data", "pack", str(path), str(tmp_path / "p.h5"), "--units", "ev"]) == 0
    assert main(["data", "info", str(path)]) == 0 and "look like eV" in capsys.readouterr().out


def test_semi_empirical_ev_is_ambiguous_and_small_hartree_is_read(tmp_path):
    """xTB totals (valence only, ~0.07 of the free atoms' energy in Hartree) are read; the same in eV (~1.9) cannot be
    told from all-electron Hartree totals: refused, asking for units. Relative energies (~0) are Hartree."""
    xtb = write_ani(tmp_path / "xtb.h5", scale=0.07)
    assert len(read_dataset(xtb, KEYS)) == 8
    with pytest.raises(DataError, match=r"cannot tell Hartree from eV \(valid: set units: hartree or units: ev"):
        read_dataset(write_ani(tmp_path / "xtb_ev.h5", scale=0.07 * HARTREE_TO_EV), KEYS)
    assert len(read_dataset(write_ani(tmp_path / "rel.h5", scale=1e-3), KEYS)) == 8


# ----------------------------------------------------------------------------- geometries


def _nan_coordinates(name, arrays):
    if name == "water":
        arrays["coordinates"][2, 1, 0] = np.nan
    return arrays


def _overlapping(name, arrays):
    if name == "methane":
        arrays["coordinates"][1, 2] = arrays["coordinates"][1, 1]
    return arrays


def test_nan_coordinates_are_refused(tmp_path, capsys):
    """Before: NaN coordinates were read and trained on. Now: refused, naming group, conformation and atom."""
    path = write_ani(tmp_path / "nan.h5", edit=_nan_coordinates)
    expected = r"nan\.h5:/water: conformation 2: coordinates of atom 1 are \[nan, .*\] \(valid: finite positions"
    with pytest.raises(DataError, match=expected):
        read_dataset(path, KEYS)
    assert "water: conformation 2: coordinates of atom 1" in cli_error(capsys, "data", "pack", path, tmp_path / "p.h5")
    assert not (tmp_path / "p.h5").exists()
    with pytest.raises(DataError, match="water: conformation 2"):
        label_file(path, "fake", workers=0, labeler=Instant())
    assert not (tmp_path / "nan.h5.labelling").exists()


def test_overlapping_atoms_are_refused(tmp_path):
    """Before: two atoms at distance 0 gave NaN forces, then masked as missing. Now: refused, naming group,
    conformation and both atoms."""
    path = write_ani(tmp_path / "zero.h5", edit=_overlapping)
    with pytest.raises(DataError, match=r"zero\.h5:/methane: conformation 1: atoms 1 \(H\) and 2 \(H\) are 0 Å apart "
                                        r"\(valid: at least 0\.1 Å"):
        read_dataset(path, KEYS)
    with pytest.raises(DataError, match="methane: conformation 1: atoms 1"):
        pack_ani(path, tmp_path / "p.h5")


def _frames(**change):
    frames = []
    for k in range(3):
        atoms = ase.Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93 + 0.01 * k, 0]], **change)
        atoms.calc = SinglePointCalculator(atoms, energy=-2079.0 + k, forces=np.full((3, 3), 0.1 * k))
        frames.append(atoms)
    return frames


def test_extxyz_bad_geometries(tmp_path):
    """The extxyz reader likewise: NaN positions, overlapping atoms, and an atom on its own periodic image."""
    frames = _frames()
    frames[1].positions[2] = np.nan
    ase.io.write(tmp_path / "nan.xyz", frames, format="extxyz")
    with pytest.raises(DataError, match=r"nan\.xyz: frame 1: coordinates of atom 2 are \[nan, nan, nan\] .*drop the frame"):
        read_dataset(tmp_path / "nan.xyz", {"energy": "energy"})
    frames = _frames()
    frames[2].positions[1] = frames[2].positions[0]
    ase.io.write(tmp_path / "zero.xyz", frames, format="extxyz")
    with pytest.raises(DataError, match=r"zero\.xyz: frame 2: atoms 0 \(H\) and 1 \(H\) are 0 Å apart .*drop the frame"):
        read_dataset(tmp_path / "zero.xyz", {"energy": "energy"})
    frames = _frames(cell=np.diag([5.0, 5.0, 5.0]), pbc=True)
    frames[0].positions[1] = [4.98, 0, 0]  # 0.02 Å from atom 0 across the boundary
    ase.io.write(tmp_path / "pbc.xyz", frames, format="extxyz")
    with pytest.raises(DataError, match=r"pbc\.xyz: frame 0: atoms \d \(H\) and \d \(H\) are 0\.02 Å apart"):
        read_dataset(tmp_path / "pbc.xyz", {"energy": "energy"})
    ase.io.write(tmp_path / "ok.xyz", _frames(cell=np.diag([5.0, 5.0, 5.0]), pbc=True), format="extxyz")
    assert len(read_dataset(tmp_path / "ok.xyz", {"energy": "energy"})) == 3


# ----------------------------------------------------------------------------- layout


def test_misspelt_coordinates_key_is_refused(tmp_path, capsys):
    """Before: a group whose 'coordinates' key was misspelt was dropped without a word (also by data info).
    Now: refused, naming the group and the keys it has."""
    def misspell(name, arrays):
        if name == "water":
            arrays["coordinate"] = arrays.pop("coordinates")
        return arrays

    path = write_ani(tmp_path / "typo.h5", edit=misspell)
    expected = ("typo.h5:/water: no 'coordinates' key (keys: atomic_numbers, coordinate, x.energy, x.forces) (valid: "
                "every molecule group holds 'coordinates' and 'atomic_numbers' or 'species')")
    with pytest.raises(DataError) as info:
        read_dataset(path, KEYS)
    assert str(info.value).endswith(expected)
    assert expected in cli_error(capsys, "data", "info", path)
    assert expected in cli_error(capsys, "data", "pack", path, tmp_path / "p.h5")
    assert expected in cli_error(capsys, "data", "label", path, "--method", "xtb", "--workers", "0")


def test_zero_atom_molecule_is_refused(tmp_path):
    """Before: a molecule without atoms was accepted. Now: refused, naming the group."""
    def empty(name, arrays):
        if name == "water":
            arrays.update({"atomic_numbers": np.zeros(0, dtype=np.int64), "coordinates": np.zeros((4, 0, 3)),
                           "x.forces": np.zeros((4, 0, 3))})
        return arrays

    with pytest.raises(DataError, match=r"empty\.h5:/water: a molecule without atoms: 'atomic_numbers' is empty \(valid: at least one atom"):
        read_dataset(write_ani(tmp_path / "empty.h5", edit=empty), KEYS)


def _pad(name, arrays):
    """ANI-2x style: every molecule padded to 7 atoms with atomic number 0 (coordinates and forces 0)."""
    n = len(arrays["atomic_numbers"])
    arrays["atomic_numbers"] = np.concatenate([[0], arrays["atomic_numbers"], np.zeros(6 - n, dtype=np.int64)])
    for key in ("coordinates", "x.forces"):
        value = arrays[key]
        arrays[key] = np.concatenate([np.zeros((len(value), 1, 3)), value, np.zeros((len(value), 6 - n, 3))], axis=1)
    return arrays


def test_zero_padded_atomic_numbers_are_dropped(tmp_path, capsys):
    """Before: atomic_numbers padded with 0 (and the padding atoms all at the origin) was a traceback. Now the
    padding atoms are dropped from coordinates and every per-atom label: the same dataset as the unpadded file."""
    plain = read_dataset(write_ani(tmp_path / "plain.h5"), KEYS)
    padded_path = write_ani(tmp_path / "padded.h5", edit=_pad)
    padded = read_dataset(padded_path, KEYS)
    np.testing.assert_array_equal(padded.species, plain.species)
    np.testing.assert_array_equal(padded.atom_ptr, plain.atom_ptr)
    np.testing.assert_array_equal(padded.positions, plain.positions)
    for key in KEYS:
        np.testing.assert_array_equal(padded.labels[key], plain.labels[key])
    pack_ani(padded_path, tmp_path / "p.h5")
    packed = read_dataset(tmp_path / "p.h5", KEYS)
    np.testing.assert_array_equal(packed.n_atoms, plain.n_atoms)
    np.testing.assert_allclose(packed.labels["forces"], plain.labels["forces"])
    assert main(["data", "info", str(padded_path), "--per-molecule"]) == 0
    assert "atoms   3" in capsys.readouterr().out


def test_labelling_a_padded_file_labels_the_real_atoms(tmp_path):
    """Padding atoms never reach the labeler, and merged forces land on the real atoms (0 on the padding, as padded
    files hold them)."""
    path = write_ani(tmp_path / "padded.h5", n_conf=2, edit=_pad)
    summary = label_file(path, "fake", workers=0, progress=False, labeler=Instant())
    assert summary.done == 4
    with h5py.File(path) as f:
        forces, z = f["water/fake.forces"][()], f["water/atomic_numbers"][()]
        energy = f["water/fake.energy"][()]
    assert (forces[:, z == 0] == 0).all() and (forces[:, z != 0] == 3.0).all() and (energy == 3.0).all()
    assert label_file(path, "fake", workers=0, progress=False, labeler=Instant()).skipped == 4
    assert len(read_dataset(path, {"energy": "fake.energy", "forces": "fake.forces"}, units="hartree")) == 4


# ----------------------------------------------------------------------------- splits


def test_split_does_not_depend_on_the_key_order(ani_file):
    """Before: the split depended on the key order of data.split.fractions, so a reformatted config gave other
    metrics (and its run_dir refused it). Now the splits are cut in the order train, valid, test."""
    data = read_dataset(ani_file, {"energy": "morse.energy"})
    canonical = split(data, {"train": 0.5, "valid": 0.25, "test": 0.25}, seed=3)
    shuffled = split(data, {"test": 0.25, "valid": 0.25, "train": 0.5}, seed=3)
    assert list(shuffled) == ["train", "valid", "test"]
    assert all(np.array_equal(canonical[k], shuffled[k]) for k in canonical)
    spec = validate(SplitSpec, {"fractions": {"test": 0.1, "train": 0.8, "valid": 0.1}}, "c.yaml", "data.split")
    assert list(spec.fractions) == ["train", "valid", "test"]  # also what the stage records hold


@pytest.mark.parametrize("fractions, total", [({"train": 0.8, "valid": 0.2, "test": 0.2}, "1.2"),
                                              ({"train": 0.5, "valid": 0.1, "test": 0.1}, "0.7")])
def test_fractions_that_do_not_sum_to_one_are_refused(tmp_path, ani_file, capsys, fractions, total):
    """Before: fractions summing to more (or less) than 1 were renormalised without a word. Now refused with the
    YAML path and the sum, before the run directory exists."""
    import yaml

    config = {"workflow": "ekd", "run_dir": str(tmp_path / "run"), "device": "cpu",
              "data": {"train": {"path": str(ani_file), "energy": "morse.energy"}, "split": {"fractions": fractions}},
              "training": {"max_epochs": 1, "batch_size": 8},
              "teachers": {"train": {"model": {"architecture": "toy", "width": 4}}},
              "student": {"model": {"architecture": "toy", "width": 4}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"data.split.fractions: the fractions sum to {total}, not 1 (valid:" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match=f"data.split.fractions: .* sum to {total}"):
        split(read_dataset(ani_file, {"energy": "morse.energy"}), fractions, seed=0)


# ----------------------------------------------------------------------------- data pack


def test_pack_onto_its_source_is_refused(tmp_path, capsys):
    """Before: `kdframe data pack X.h5 X.h5` replaced the source (a CCSD(T) file, irreplaceable) with rc 0. Now the
    target may not be the source, also through a symbolic or hard link, and the source is left as it was."""
    source = write_ani(tmp_path / "X.h5")
    before = digest(source)
    (tmp_path / "sym.h5").symlink_to(source)
    os.link(source, tmp_path / "hard.h5")
    for target in (source, tmp_path / "sym.h5", tmp_path / "hard.h5", tmp_path / "." / "X.h5"):
        err = cli_error(capsys, "data", "pack", source, target, "--force")
        assert f"{target}: is the source file {source} (the same file on disk); packing would replace it" in err
    assert "is the source file" in cli_error(capsys, "data", "pack", tmp_path / "sym.h5", source)
    assert digest(source) == before and sorted(p.name for p in tmp_path.iterdir()) == ["X.h5", "hard.h5", "sym.h5"]


def test_pack_keeps_an_existing_target_unless_forced(tmp_path, capsys):
    """Before: an existing target was replaced without a word. Now only with --force (still atomically)."""
    source = write_ani(tmp_path / "X.h5")
    target = tmp_path / "out.h5"
    target.write_bytes(b"precious")
    assert f"{target}: exists (valid: another path, or --force to replace it)" in cli_error(
        capsys, "data", "pack", source, target)
    assert target.read_bytes() == b"precious"
    assert main(["data", "pack", str(source), str(target), "--force"]) == 0
    assert len(read_dataset(target, KEYS)) == 8
    assert "already a packed file" in cli_error(capsys, "data", "pack", target, tmp_path / "again.h5")


# ----------------------------------------------------------------------------- data label


class Instant(Labeler):
    """A fake level of theory: energy 3, forces 3 everywhere (in-process tests)."""

    method = "fake"
    provides = ("energy", "forces")

    def compute(self, atomic_numbers, positions):
        assert (np.asarray(atomic_numbers) > 0).all()
        return {"energy": 3.0, "forces": np.full((len(atomic_numbers), 3), 3.0)}


@pytest.mark.parametrize("option", [["--limit", "0"], ["--limit", "-1"], ["--per-molecule", "0"], ["--limit", "x"]])
def test_label_counts_must_be_positive(tmp_path, capsys, option):
    """Before: --limit 0 and --per-molecule 0 labelled everything (CPU-days at CCSD(T)), --limit -1 all but one.
    Now argparse refuses them (rc 2, one line) before anything runs."""
    path = write_ani(tmp_path / "d.h5")
    with pytest.raises(SystemExit) as info:
        main(["data", "label", str(path), "--method", "xtb", "--workers", "0", *option])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option[0]}: " in err and "(valid: " in err and "Traceback" not in err
    assert not (tmp_path / "d.h5.labelling").exists()


@pytest.mark.parametrize("limit", [0, -1])
def test_label_file_refuses_non_positive_counts(tmp_path, limit):
    """The library call likewise: a ConfigError naming the option, and no journal."""
    path = write_ani(tmp_path / "d.h5")
    with pytest.raises(ConfigError, match=r"--limit: .* \(valid: a positive integer"):
        label_file(path, "fake", workers=0, limit=limit, labeler=Instant())
    with pytest.raises(ConfigError, match="--per-molecule"):
        select_items([], per_molecule=limit)
    assert not (tmp_path / "d.h5.labelling").exists()


def test_label_on_extxyz_or_truncated_hdf5_is_one_message(tmp_path, capsys):
    """Before: `data label` on an .xyz or a truncated .h5 was a traceback (h5py's OSError). Now one message."""
    ase.io.write(tmp_path / "w.xyz", _frames(), format="extxyz")
    err = cli_error(capsys, "data", "label", tmp_path / "w.xyz", "--method", "xtb", "--workers", "0")
    assert "w.xyz: an extxyz file; kdframe data label labels ANI-layout HDF5 files" in err
    full = write_ani(tmp_path / "full.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(full[: len(full) // 2])
    err = cli_error(capsys, "data", "label", tmp_path / "cut.h5", "--method", "xtb", "--workers", "0")
    assert "cut.h5: not a readable HDF5 file" in err and "expected ANI-layout HDF5" in err
    assert not (tmp_path / "cut.h5.labelling").exists() and not (tmp_path / "w.xyz.labelling").exists()


SLOW_LABELER = textwrap.dedent('''
    import os, time
    from kdframe.labeler import Labeler

    class Slow(Labeler):
        method = "slow"

        def __init__(self, pids):
            self.pids = pids

        def setup_worker(self):
            open(os.path.join(self.pids, str(os.getpid())), "w").close()

        def compute(self, z, pos):
            time.sleep(120)
            return {"energy": 0.0}
''')

PARENT = textwrap.dedent('''
    import sys
    from slow_labeler import Slow
    from kdframe.labelling import label_file
    label_file(sys.argv[1], "slow", workers=2, progress=False, labeler=Slow(sys.argv[2]))
''')


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_labelling_workers_die_with_their_parent(tmp_path):
    """Before: labelling worker processes stayed alive (computing for hours) after the parent was killed.
    Now each worker gets SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG; a watchdog thread elsewhere)."""
    (tmp_path / "slow_labeler.py").write_text(SLOW_LABELER)
    pids_dir = tmp_path / "pids"
    pids_dir.mkdir()
    path = write_ani(tmp_path / "d.h5")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(path), str(pids_dir)], env=env)
    workers: list[int] = []
    try:
        deadline = time.time() + 180
        while time.time() < deadline and len(workers) < 2 and parent.poll() is None:
            time.sleep(0.1)
            workers = [int(p.name) for p in pids_dir.iterdir()]
        assert len(workers) == 2, "the workers did not start"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 10
        while time.time() < deadline and any(map(_alive, workers)):
            time.sleep(0.1)
        assert not any(map(_alive, workers)), "workers outlived their parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
