"""The fixed cases of the session-11 battery of bad inputs (docs/bad-inputs.md): one ``kdframe: error:`` line each."""

import os
import shutil

import h5py
import numpy as np
import pytest
import yaml

import test_bad_inputs as bad_inputs
from kdframe.cli import main
from test_bad_inputs import _error


def _config(tmp_path, ani_file, **changes):
    """test_bad_inputs' config, with the data's forces named."""
    return bad_inputs._config(tmp_path, ani_file, **{"data.train.forces": "morse.forces", **changes})


# --- YAML -------------------------------------------------------------------------------------------------

def test_a_config_that_is_not_utf8_is_one_message(tmp_path, ani_file, capsys):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"workflow: ekd\nrun_dir: caf\xe9\n")
    assert "latin1.yaml: not UTF-8 text (byte 0xe9 at offset 26)" in _error(capsys, "run", latin1)
    assert "morse.h5: not UTF-8 text" in _error(capsys, "run", ani_file)  # an HDF5 file given as the config


@pytest.mark.parametrize("changes, expected", [
    ({"training.lr": float("inf")}, "training.lr: Input should be a finite number"),
    ({"training.weight_l2": float("nan")}, "training.weight_l2: Input should be a finite number"),
    ({"student.training": {"lr": float("inf")}}, "student.training.lr: Input should be a finite number"),
    ({"training.regularisers": {"smoothness": -1.0}}, "training.regularisers.smoothness: Input should be greater"),
    ({"student.model.width": True}, "student.model.width: True is not a number (valid: int)"),
], ids=["lr inf", "weight_l2 nan", "student lr inf", "negative regulariser", "width true"])
def test_numbers_that_train_on_nothing_are_refused(tmp_path, ani_file, capsys, changes, expected):
    assert expected in _error(capsys, "run", _config(tmp_path, ani_file, **changes))
    assert not (tmp_path / "run").exists()


def test_a_source_key_missing_is_refused_before_the_teachers_train(tmp_path, ani_file, capsys):
    source = {"extra": {"path": str(ani_file), "energy": "teacher.energy", "weights": {"energy": 1}, "share": 0.5}}
    err = _error(capsys, "run", _config(tmp_path, ani_file, **{"student.sources": source}))
    assert "student.sources.extra: " in err and "key 'teacher.energy' (for 'extra.energy') not found" in err
    assert not (tmp_path / "run").exists()  # no teacher stage was made


# --- data -------------------------------------------------------------------------------------------------

def _edited(tmp_path, ani_file, key, value):
    copy = tmp_path / "edited.h5"
    shutil.copy(ani_file, copy)
    with h5py.File(copy, "r+") as f:
        del f["water"][key]
        f["water"][key] = value
    return copy


@pytest.mark.parametrize("dtype, expected", [(np.complex128, "complex128 values"), ("S12", "|S12 values")])
def test_energies_that_are_not_real_numbers_are_refused(tmp_path, ani_file, dtype, expected):
    from kdframe.data import read_dataset
    from kdframe.errors import DataError

    with h5py.File(ani_file) as f:
        energies = f["water"]["morse.energy"][()].astype(dtype)
    with pytest.raises(DataError, match=f"edited.h5:/water/morse.energy: 'energy' holds {expected}"):
        read_dataset(_edited(tmp_path, ani_file, "morse.energy", energies), {"energy": "morse.energy"})


def test_extxyz_energy_that_is_text_is_one_message(tmp_path):
    from kdframe.data import read_dataset
    from kdframe.errors import DataError

    path = tmp_path / "x.xyz"
    path.write_text('2\nProperties=species:S:1:pos:R:3 energy=abc pbc="F F F"\nH 0 0 0\nH 0 0 0.74\n')
    with pytest.raises(DataError, match="x.xyz: frame 0: key 'energy': 'energy' holds <U3 values such as 'abc'"):
        read_dataset(path, {"energy": "energy"})


# --- run directories --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished toy EKD run (its config and run_dir) to copy and damage."""
    from toy import ToyArchitecture, write_ani_file

    from kdframe.plugins import registry

    registry().architectures.setdefault("toy", ToyArchitecture())

    base = tmp_path_factory.mktemp("finished")
    data = base / "toy.h5"
    write_ani_file(data, n_conf=6)
    config = _config(base, data)
    assert main(["run", str(config), "--quiet"]) == 0
    return config, base / "run"


def _damaged(finished, tmp_path, damage):
    config, run_dir = finished
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, symlinks=True)
    (copy / ".lock").unlink(missing_ok=True)
    damage(copy)
    text = yaml.safe_load(config.read_text())
    text["run_dir"] = str(copy)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(text))
    return path


def _replace_by_file(path):
    shutil.rmtree(path)
    path.write_text("not kdframe's")


def _replace_by_folder(path):
    path.unlink()
    path.mkdir()


def _symlink_loop(path):
    shutil.rmtree(path)
    os.symlink(path.name, path)


@pytest.mark.parametrize("damage, expected", [
    (lambda d: _replace_by_file(d / "knowledge"), "run/knowledge: cannot write (a file is in the way of a folder)"),
    (lambda d: _replace_by_file(d / "control"), "run/control: cannot write (a file is in the way of a folder)"),
    (lambda d: _symlink_loop(d / "student"), "run/student: cannot write"),
    (lambda d: (d / ".lock").mkdir(), "run/.lock: cannot write (a folder is in the way of a file)"),
    (lambda d: _replace_by_folder(d / "teacher" / "model.pt"),
     "teacher/model.pt: cannot write (a folder is in the way of a file)"),
], ids=["knowledge is a file", "stage is a file", "stage symlink loop", ".lock is a folder", "model.pt is a folder"])
def test_something_in_the_way_in_the_run_dir_is_one_message(finished, tmp_path, capsys, damage, expected):
    err = _error(capsys, "run", _damaged(finished, tmp_path, damage), "--quiet")
    assert expected in err and "move that out of the way" in err


@pytest.mark.parametrize("damage", [lambda d: _replace_by_folder(d / "report.md"),
                                    lambda d: _replace_by_file(d / "plots")], ids=["report.md folder", "plots file"])
def test_a_report_that_cannot_be_written_is_a_warning_and_the_table_is_printed(finished, tmp_path, capsys, damage):
    assert main(["run", str(_damaged(finished, tmp_path, damage)), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "| test | student |" in out and "kdframe: warning: report.md could not be written" in err
    assert "in the way" in err and "Traceback" not in err


def test_a_run_dir_that_is_a_symlink_loop(tmp_path, ani_file, capsys):
    os.symlink("loop", tmp_path / "loop")
    err = _error(capsys, "run", _config(tmp_path, ani_file, run_dir=str(tmp_path / "loop")))
    assert "run_dir: " in err and "loop is a symlink to nothing (a loop, or its target is gone)" in err


# --- CLI --------------------------------------------------------------------------------------------------

def test_evaluate_out_onto_its_model_or_data_is_refused(tmp_path, ani_file, capsys, toy_architecture):
    from kdframe.plugins import registry
    from kdframe.potential import Potential

    model = tmp_path / "m.pt"
    Potential(registry().architectures["toy"], {}, [1, 6, 7, 8]).save(model)
    data = tmp_path / "data.h5"
    shutil.copy(ani_file, data)
    before = model.read_bytes(), data.read_bytes()
    for out in (model, data):
        err = _error(capsys, "evaluate", "--model", model, "--data", data, "--energy-key", "morse.energy", "--out", out)
        assert f"--out: {out} is an input of this evaluation" in err
    assert (model.read_bytes(), data.read_bytes()) == before


@pytest.mark.parametrize("argv, expected", [
    (["--conformers", "-1"], "--conformers: -1 (valid: 1, 2, ...)"),
    (["--max-conformers", "0"], "--max-conformers: 0 (valid: 1, 2, ...)"),
    (["--md-frames", "-3"], "--md-frames: -3 (valid: 0, 1, ...)"),
    (["--nms-temperatures", "-300"], "--nms-temperatures: [-300.0] (valid: temperatures > 0 K)"),
], ids=["conformers", "max-conformers", "md-frames", "temperatures"])
def test_data_sample_refuses_bad_counts_before_any_work(tmp_path, capsys, argv, expected):
    pytest.importorskip("rdkit")
    out = tmp_path / "s.h5"
    assert expected in _error(capsys, "data", "sample", out, "--smiles", "C", *argv)
    assert not out.exists()


@pytest.mark.parametrize("argv, expected", [
    (["data", "generate", "g.h5", "--smiles", "C", "--box-atoms", "0"], "--box-atoms: 0 (valid: 1, 2, 3, ...)\n"),
    (["data", "generate", "g.h5", "--smiles", "C", "--workers", "0"], "--workers: 0 (valid: 1, 2, 3, ...)\n"),
    (["data", "label", "l.h5", "--method", "xtb", "--limit", "0"],
     "--limit: 0 (valid: 1, 2, 3, ...; omit the option for all)\n"),
], ids=["box-atoms", "workers", "limit"])
def test_a_bad_count_is_told_to_be_omitted_only_where_omitting_takes_all(tmp_path, capsys, argv, expected):
    from kdframe.cli import main

    with pytest.raises(SystemExit):  # argparse's own exit
        main([str(tmp_path / a) if a.endswith(".h5") else a for a in argv])
    err = capsys.readouterr().err
    assert err.endswith(expected), err


def test_a_group_without_atomic_numbers_is_named_with_balanced_quotes(tmp_path, ani_file):
    from kdframe.data import read_dataset
    from kdframe.errors import DataError

    copy = tmp_path / "edited.h5"
    shutil.copy(ani_file, copy)
    with h5py.File(copy, "r+") as f:
        del f["water"]["atomic_numbers"]
    with pytest.raises(DataError, match=r"edited.h5:/water: no 'atomic_numbers' \(or 'species'\) key \(keys: "
                                        r"coordinates, morse.energy, morse.forces\)"):
        read_dataset(copy, {"energy": "morse.energy"})


def _odd_energies(path, values):
    import h5py

    from toy import write_ani_file

    write_ani_file(path, n_conf=3)
    with h5py.File(path, "a") as f:
        for group in f.values():
            del group["morse.energy"]
            group["morse.energy"] = values
    return path


@pytest.mark.parametrize("values", [np.array([1 + 1j, 2 + 0j, 3 + 0j]), np.array([b"-1.0", b"-2.0", b"-3.0"])],
                         ids=["complex", "bytes"])
def test_data_pack_and_info_refuse_energies_that_are_not_real_numbers(tmp_path, capsys, values):
    from kdframe.cli import main

    path = _odd_energies(tmp_path / "odd.h5", values)
    for argv in (["data", "pack", str(path), str(tmp_path / "p.h5")], ["data", "info", str(path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "'morse.energy' holds" in err and "(valid: real numbers" in err, err
    assert not (tmp_path / "p.h5").exists()


def test_data_sample_refuses_a_bad_smiles_before_its_progress_bar(tmp_path, capsys):
    from kdframe.cli import main

    assert main(["data", "sample", str(tmp_path / "s.h5"), "--smiles", "x:C1CC"]) == 2
    assert capsys.readouterr().err == "kdframe: error: x: invalid SMILES 'C1CC'\n"
