"""Every bad input gives one clear message naming the file/key/YAML path and what is valid."""

import h5py
import pytest
import yaml

from kdframe.cli import main


def _config(tmp_path, ani_file, **changes):
    config = {
        "workflow": "ekd", "run_dir": str(tmp_path / "run"), "device": "cpu",
        "data": {"train": {"path": str(ani_file), "energy": "morse.energy"}},
        "training": {"max_epochs": 1, "batch_size": 8},
        "teachers": {"train": {"model": {"architecture": "toy", "width": 4}}},
        "student": {"model": {"architecture": "toy", "width": 4}},
    }
    for dotted, value in changes.items():
        node, *path, last = ["root", *dotted.split(".")]
        target = config
        for key in path:
            target = target.setdefault(key, {})
        if value is None:
            target.pop(last)
        else:
            target[last] = value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _error(capsys, *argv):
    assert main(list(map(str, argv))) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdframe: error: ") and "Traceback" not in err
    return err


CASES = [
    ({"workflow": "ekdd"}, ["workflow", "unknown workflow 'ekdd'", "valid: atomic, ekd, hessian, multifidelity, train"]),
    ({"workflow": None}, ["workflow: missing", "valid: atomic, ekd"]),
    ({"trainng": {"lr": 1}}, ["trainng: unknown key", "valid:", "training"]),
    ({"data.split.seed": -1}, ["data.split.seed", "greater than or equal to 0"]),
    ({"student.model.widht": 3}, ["student.model.widht: unknown key (valid: cutoff, n_radial, width)"]),
    ({"student.model.architecture": "schnet"}, ["student.model.architecture", "unknown architecture 'schnet'",
                                                "valid: hippynn", "toy"]),
    ({"data.train.path": "nowhere.h5"}, ["data.train.path", "file not found"]),
    ({"data.train.energy": "ccsd.energy"}, ["morse.h5:/", "key 'ccsd.energy' (for 'energy') not found",
                                            "available: morse.energy, morse.forces"]),
    ({"student.training": {"lr": -1}}, ["student.training.lr", "greater than 0"]),
    ({"training.dtype": "float16"}, ["training.dtype", "'float32' or 'float64'"]),
    ({"data.split.by": "atom"}, ["data.split.by", "'configuration' or 'molecule'"]),
    ({"student.weights": {"energy": 1, "forcez": 10}}, ["student.weights.forcez", "unknown loss term",
                                                        "valid: energy, forces"]),
    ({"student.weights": {"energy": 1, "forces": {"0": 10}}}, ["student.weights.forces", "epochs start at 1"]),
    ({"student.weights": {"energy": 1, "forces": {50: 10, 100: 5}}}, ["student.weights.forces: schedule epochs "
                                                                      "start at 1, got 50"]),
    ({"student.weights": {"energy": 1, "forces": -10}}, ["student.weights.forces: weight -10.0 is not a finite "
                                                         "number >= 0"]),
    ({"student.weights": {"energy": float("nan")}}, ["student.weights.energy: weight nan is not a finite"]),
    ({"student.weights": {"energy": 1, "forces": {1: 10, 20: -1}}}, ["student.weights.forces[20]: weight -1.0"]),
    ({"student.weights": {"energy": 0, "forces": {1: 0}}}, ["student.weights: every loss weight is zero"]),
    ({"student.weights": {}}, ["student.weights: no loss terms (valid: energy, forces, stress)"]),
    ({"teachers.files": ["t.pt"]}, ["teachers", "exactly one of 'train'", "'pretrained'"]),
    ({"teachers": {"pretrained": "ani3"}}, ["teachers.pretrained", "unknown pretrained 'ani3'", "valid: ani1ccx, ani1x"]),
    ({"compare": {"hipnn teachers": ["missing.pt"]}}, ["compare.hipnn teachers[0]", "model file not found: missing.pt"]),
    ({"compare": {"hipnn teachers": ["runs/*/model.pt"]}}, ["compare.hipnn teachers[0]", "model file not found: runs/*/model.pt"]),
    ({"device": "tpu"}, ["device", "'auto', 'cpu' or 'cuda'"]),
    ({"generations": 3}, ["generations", "1 or 2"]),
]


@pytest.mark.parametrize("changes, expected", CASES, ids=[next(iter(c)) for c, _ in CASES])
def test_bad_config(tmp_path, ani_file, capsys, changes, expected):
    err = _error(capsys, "run", _config(tmp_path, ani_file, **changes))
    for text in expected:
        assert text in err


def test_missing_config_file(tmp_path, capsys):
    assert "nope.yaml: config file not found" in _error(capsys, "run", tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("workflow: ekd\n  data: [\n")
    assert "bad.yaml: not valid YAML" in _error(capsys, "run", path)


def test_evaluation_set_with_unknown_elements(tmp_path, ani_file, capsys):
    other = tmp_path / "sulfur.h5"
    with h5py.File(other, "w") as f:
        g = f.create_group("h2s")
        g["atomic_numbers"], g["coordinates"], g["e"] = [16, 1, 1], [[[0, 0, 0], [1.3, 0, 0], [0, 1.3, 0]]], [-399.0]
    config = _config(tmp_path, ani_file, **{"data.evaluate": [{"path": str(other), "energy": "e"}]})
    err = _error(capsys, "run", config)
    assert f"{config}: data.evaluate[0]" in err and "elements [16] do not occur in the training data" in err


def test_evaluate_a_file_that_is_not_a_model(tmp_path, ani_file, capsys):
    bogus = tmp_path / "model.pt"
    bogus.write_text("not a model")
    assert "model.pt: not a kdframe model file" in _error(capsys, "evaluate", "--model", bogus, "--data", ani_file)


def test_evaluate_missing_key(tmp_path, ani_file, capsys):
    import torch

    from kdframe.plugins import registry
    from kdframe.potential import Potential

    Potential(registry().architectures["toy"], {}, [1, 6, 7, 8]).save(tmp_path / "m.pt")
    err = _error(capsys, "evaluate", "--model", tmp_path / "m.pt", "--data", ani_file)
    assert "key 'energy' (for 'energy') not found (available: morse.energy, morse.forces)" in err
    torch.manual_seed(0)


def test_not_an_hdf5_file(tmp_path, capsys):
    bad = tmp_path / "x.h5"
    bad.write_text("text")
    from kdframe.data import read_dataset
    from kdframe.errors import DataError

    with pytest.raises(DataError, match="x.h5: not a readable HDF5 file"):
        read_dataset(bad, {"energy": "e"})


def _ani_copy(tmp_path, ani_file, edit):
    """A copy of the test data with ``edit(file)`` applied."""
    import shutil

    copy = tmp_path / "edited.h5"
    shutil.copy(ani_file, copy)
    with h5py.File(copy, "r+") as f:
        edit(f)
    return copy


def _replace(group, key, value):
    del group[key]
    group[key] = value


FILE_CASES = {
    "inf energy": (lambda f: f["water"]["morse.energy"].__setitem__(3, float("inf")),
                   ["edited.h5:/water/morse.energy: infinite value at conformation 3", "NaN marks a missing value"]),
    "forces of too many atoms": (lambda f: _replace(f["water"], "morse.forces", f["water"]["morse.forces"][()][:, [0, 1, 2, 0]]),
                                 ["edited.h5:/water/morse.forces: shape (12, 4, 3) for 'forces'", "expected (12, 3, 3)"]),
    "energy as a column": (lambda f: _replace(f["water"], "morse.energy", f["water"]["morse.energy"][()][:, None]),
                           ["edited.h5:/water/morse.energy: shape (12, 1) for 'energy'; expected (12,)"]),
    "species per conformation": (lambda f: _replace(f["water"], "atomic_numbers", [[8, 1, 1]] * 12),
                                 ["edited.h5:/water/atomic_numbers: shape (12, 3)", "ANI-2x layout"]),
}


@pytest.mark.parametrize("case", FILE_CASES)
def test_bad_data_file(tmp_path, ani_file, capsys, case):
    edit, expected = FILE_CASES[case]
    config = _config(tmp_path, ani_file, **{"data.train": {"path": str(_ani_copy(tmp_path, ani_file, edit)),
                                                           "energy": "morse.energy", "forces": "morse.forces"}})
    err = _error(capsys, "run", config)
    for text in expected:
        assert text in err


def test_packing_checks_label_shapes(tmp_path, ani_file, capsys):
    bad = _ani_copy(tmp_path, ani_file, FILE_CASES["forces of too many atoms"][0])
    assert "edited.h5:/water/morse.forces: shape (12, 4, 3)" in _error(capsys, "data", "pack", bad, tmp_path / "p.h5")
    assert not (tmp_path / "p.h5").exists()
    assert "x.xyz: not a readable HDF5 file" in _error(capsys, "data", "pack", _xyz(tmp_path), tmp_path / "p.h5")
    assert "x.xyz: not a readable HDF5 file" in _error(capsys, "data", "info", _xyz(tmp_path))


def _xyz(tmp_path, energy="-1.0"):
    path = tmp_path / "x.xyz"
    path.write_text(f'2\nProperties=species:S:1:pos:R:3 energy={energy} pbc="F F F"\nH 0 0 0\nH 0 0 0.74\n')
    return path


def test_bad_extxyz(tmp_path, ani_file, capsys):
    from kdframe.data import read_dataset
    from kdframe.errors import DataError

    with pytest.raises(DataError, match="x.xyz: frame 0: key 'energy' holds an infinite value"):
        read_dataset(_xyz(tmp_path, "inf"), {"energy": "energy"})
    (tmp_path / "empty.xyz").write_text("")
    with pytest.raises(DataError, match="empty.xyz: no frames"):
        read_dataset(tmp_path / "empty.xyz", {"energy": "energy"})


def test_duplicate_yaml_key(tmp_path, ani_file, capsys):
    config = _config(tmp_path, ani_file)
    config.write_text(config.read_text() + "training: {lr: 0.1}\n")
    assert "c.yaml: not valid YAML: key 'training' given twice" in _error(capsys, "run", config)


@pytest.mark.parametrize("changes, expected", [
    ({"run_dir": "c.yaml"}, "c.yaml is a file; give a directory"),
    ({"data.split": {"by": "molecule", "fractions": {"train": 0.9, "valid": 0.05, "test": 0.05}}},
     "data.split.fractions.valid: the valid split gets none of the 4 molecules"),
    ({"data.train.energy": "all_nan"}, "data.train.energy: 'all_nan' has no value (all NaN) in the train split"),
], ids=["run_dir is a file", "empty split", "no energies"])
def test_run_setup_errors(tmp_path, ani_file, capsys, changes, expected):
    import numpy as np

    def all_nan(f):
        for group in f.values():
            group["all_nan"] = np.full(len(group["coordinates"]), np.nan)

    data = _ani_copy(tmp_path, ani_file, all_nan)
    changes = {"data.train.path": str(data), **changes}
    if "run_dir" in changes:
        changes["run_dir"] = str(tmp_path / "c.yaml")
    err = _error(capsys, "run", _config(tmp_path, ani_file, **changes))
    assert expected in err


def test_a_set_with_one_conformer_per_molecule_is_scored_without_de(tmp_path, ani_file, capsys):
    """No two conformers of one molecule (e.g. one optimised geometry each): E and F are scored, dE is left out."""
    from toy import write_ani_file

    single = tmp_path / "single.h5"
    write_ani_file(single, n_conf=1, seed=3)
    config = _config(tmp_path, ani_file, **{"data.evaluate": [{"name": "optimised", "path": str(single),
                                                               "energy": "morse.energy", "forces": "morse.forces"}]})
    assert main(["run", str(config), "--quiet"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| optimised | student |")]
    assert len(rows) == 1 and "nan" not in rows[0].lower()
