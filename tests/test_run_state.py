"""Run directory state, locks, permissions and disk: one ``kdframe: error:`` line naming the file and what to do,
or a correct recovery with a ``kdframe: note:``; nothing written or damaged before an error.

Tests run as root, which ignores file permissions: a read-only directory or file and a full disk are
simulated by making the write (or open) functions raise the ``OSError`` the kernel would give.
"""

import errno
import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch

from kdframe.cli import main

CONFIG = """
workflow: train
run_dir: {run_dir}
seed: 0
device: cpu
data:
  train: {{path: {data}, energy: morse.energy, forces: morse.forces}}
training: {{batch_size: 8, max_epochs: 3, lr: 0.003}}
potential:
  model: {{architecture: toy, width: {width}}}
  weights: {{energy: 1, forces: 5}}
"""


@pytest.fixture(autouse=True)
def _no_cuda(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def _config(tmp_path, ani_file, name="c.yaml", run="run", width=4, **replace):
    text = textwrap.dedent(CONFIG.format(run_dir=tmp_path / run, data=ani_file, width=width))
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(capsys, *argv):
    assert main([*map(str, argv), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdframe: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _ok(capsys, *argv):
    assert main([*map(str, argv), "--quiet"]) == 0
    return capsys.readouterr()


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def trained(tmp_path, ani_file, capsys):
    """A finished `train` run: (config, stage folder, its model's weights, the printed table)."""
    config = _config(tmp_path, ani_file)
    out = _ok(capsys, "run", config).out
    stage = tmp_path / "run" / "potential"
    return config, stage, _weights(stage / "model.pt"), out


def _truncate(path, keep=100):
    path.write_bytes(path.read_bytes()[:keep])


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- checkpoints and models of stages -------------------------------------------------------------
def test_truncated_checkpoint_resumes_from_the_previous_one(trained, capsys):
    """An unfinished stage (no model.pt) whose checkpoint.pt is truncated resumes from checkpoint.prev.pt, with a
    note, and ends with the same weights (the epoch is replayed with the same shuffle)."""
    config, stage, weights, _ = trained
    assert (stage / "checkpoint.prev.pt").is_file()
    (stage / "model.pt").unlink()
    _truncate(stage / "checkpoint.pt")
    err = _ok(capsys, "run", config).err
    assert f"kdframe: note: {stage / 'checkpoint.pt'}: not a readable checkpoint, truncated or damaged" in err
    assert "resumed from checkpoint.prev.pt (epoch 2) instead" in err
    assert _same(_weights(stage / "model.pt"), weights)


def test_truncated_checkpoint_without_a_previous_one(trained, capsys):
    config, stage, _, _ = trained
    (stage / "model.pt").unlink()
    (stage / "checkpoint.prev.pt").unlink()
    _truncate(stage / "checkpoint.pt")
    before = _snapshot(stage)
    err = _error(capsys, "run", config)
    assert f"{stage / 'checkpoint.pt'}: cannot resume training from it (not a readable checkpoint, truncated or " \
           "damaged: PytorchStreamReader failed reading zip archive" in err
    assert f"delete the folder {stage} to train this stage again, or use a new run_dir" in err
    assert _snapshot(stage) == before  # nothing written, the damaged file kept for inspection


def test_checkpoint_of_a_wider_model(trained, tmp_path, ani_file, capsys):
    """A checkpoint.pt copied from a stage of another width: named, not a load_state_dict size-mismatch traceback."""
    config, stage, _, _ = trained
    _ok(capsys, "run", _config(tmp_path, ani_file, "wide.yaml", run="wide", width=8))
    (stage / "model.pt").unlink()
    (stage / "checkpoint.prev.pt").unlink()
    (stage / "checkpoint.pt").write_bytes((tmp_path / "wide" / "potential" / "checkpoint.pt").read_bytes())
    before = _snapshot(stage)
    err = _error(capsys, "run", config)
    assert f"{stage / 'checkpoint.pt'}: cannot resume training from it (it does not fit this stage's model: " in err
    assert "size mismatch for net.embedding.weight" in err and f"delete the folder {stage}" in err
    assert _snapshot(stage) == before


def test_truncated_model_of_a_finished_stage_is_rebuilt_from_its_checkpoint(trained, capsys):
    config, stage, weights, out = trained
    _truncate(stage / "model.pt")
    result = _ok(capsys, "run", config)
    assert f"kdframe: note: {stage / 'model.pt'}: cannot be loaded (not a kdframe model file, or a truncated or " \
           "damaged one" in result.err and "rebuilding it from checkpoint.pt" in result.err
    assert _same(_weights(stage / "model.pt"), weights) and result.out == out


def test_truncated_model_of_a_finished_stage_without_checkpoints(trained, capsys):
    config, stage, _, _ = trained
    _truncate(stage / "model.pt")
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (stage / name).unlink()
    before = _snapshot(stage)
    err = _error(capsys, "run", config)
    assert f"{stage / 'model.pt'}: the model of this finished stage cannot be loaded (not a kdframe model file, or " \
           "a truncated or damaged one" in err and f"delete the folder {stage} to train this stage again" in err
    assert _snapshot(stage) == before


def test_model_of_another_width_in_a_finished_stage(trained, tmp_path, ani_file, capsys):
    config, stage, _, _ = trained
    _ok(capsys, "run", _config(tmp_path, ani_file, "wide.yaml", run="wide", width=8))
    (stage / "model.pt").write_bytes((tmp_path / "wide" / "potential" / "model.pt").read_bytes())
    err = _error(capsys, "run", config)
    assert f"{stage / 'model.pt'}: not the model this stage trains (its hyperparameters differ from " \
           f"{stage / 'stage.json'}); the file was replaced: delete the folder {stage}" in err


def test_garbled_stage_record(trained, capsys):
    config, stage, _, _ = trained
    (stage / "stage.json").write_text((stage / "stage.json").read_text()[:30])
    before = _snapshot(stage)
    err = _error(capsys, "run", config)
    assert f"{stage / 'stage.json'}: unreadable stage record, truncated or damaged (" in err
    assert f"delete the folder {stage} to train this stage again, or use a new run_dir" in err
    assert _snapshot(stage) == before


def test_stage_without_its_record(trained, capsys):
    """A stage folder holding a model but no stage.json: the settings that made it are unknown, never trusted."""
    config, stage, _, _ = trained
    (stage / "stage.json").unlink()
    err = _error(capsys, "run", config)
    assert f"{stage}: holds model.pt, checkpoint.pt, checkpoint.prev.pt but no stage.json" in err
    assert not (stage / "stage.json").exists()


def test_teacher_file_with_altered_hyperparameters(trained, tmp_path, ani_file, capsys):
    """A teacher file whose hyperparameters were edited (width 4 -> 8): its weights no longer fit; one line."""
    _, stage, _, _ = trained
    state = torch.load(stage / "model.pt", weights_only=True)
    state["hyperparameters"]["width"] = 8
    torch.save(state, tmp_path / "teacher.pt")
    config = tmp_path / "ekd.yaml"
    config.write_text(textwrap.dedent(f"""
        workflow: ekd
        run_dir: {tmp_path / 'ekd'}
        device: cpu
        data: {{train: {{path: {ani_file}, energy: morse.energy, forces: morse.forces}}}}
        training: {{max_epochs: 1, batch_size: 8}}
        teachers: {{files: [{tmp_path / 'teacher.pt'}]}}
        student: {{model: {{architecture: toy, width: 4}}}}
        """))
    err = _error(capsys, "run", config)
    assert f"{tmp_path / 'teacher.pt'}: its weights do not fit the model its hyperparameters describe (size " \
           "mismatch for net.embedding.weight" in err
    assert "the file was altered or damaged: use the original file, or train or export the model again" in err
    assert not (tmp_path / "ekd" / "teacher").exists() and not (tmp_path / "ekd" / "student").exists()


# --- the knowledge cache ----------------------------------------------------------------------------
def _knowledge_setup(ani_file):
    from kdframe.data import read_dataset
    from kdframe.knowledge.ensemble import EnsembleForces
    from kdframe.plugins import registry
    from kdframe.potential import Ensemble, Potential
    from kdframe.teacher import Teacher

    torch.manual_seed(0)
    members = [Potential(registry().architectures["toy"], {"width": 4}, [1, 6, 7, 8]) for _ in range(2)]
    return EnsembleForces("teacher_forces"), Teacher(Ensemble(members), "t"), read_dataset(ani_file, {"energy": "morse.energy"})


@pytest.mark.parametrize("damage", ["truncated", "values changed", "no checksum"])
def test_damaged_knowledge_file_is_computed_again(ani_file, tmp_path, capsys, monkeypatch, damage):
    """A knowledge file is trusted only when its values match the checksum written with them."""
    from kdframe.knowledge import offline_knowledge
    from kdframe.knowledge.ensemble import EnsembleForces

    source, teacher, data = _knowledge_setup(ani_file)
    first = offline_knowledge(source, teacher, data, tmp_path, batch_size=16, progress=False)
    (path,) = tmp_path.glob("ensemble_forces-*.h5")
    if damage == "truncated":
        _truncate(path, 300)
    elif damage == "values changed":
        with h5py.File(path, "r+") as f:
            f["value"][0, 0] += 1.0
    else:
        with h5py.File(path, "r+") as f:
            del f.attrs["checksum"]
    capsys.readouterr()
    calls = []
    original = EnsembleForces.compute
    monkeypatch.setattr(EnsembleForces, "compute", lambda self, t, b: calls.append(1) or original(self, t, b))
    again = offline_knowledge(source, teacher, data, tmp_path, batch_size=16, progress=False)
    assert calls and np.array_equal(again, first)  # computed again, the right values
    expected = {"truncated": "unreadable knowledge file, truncated or damaged",
                "values changed": "the knowledge values do not match the checksum stored when they were written",
                "no checksum": "holds no checksum (written by an older kdframe)"}[damage]
    err = capsys.readouterr().err
    assert err.startswith(f"kdframe: note: {path}: ") and expected in err and err.endswith("; computing it again\n")
    calls.clear()
    assert np.array_equal(offline_knowledge(source, teacher, data, tmp_path, batch_size=16, progress=False), first)
    assert not calls  # the rewritten file is good again


# --- one run at a time ------------------------------------------------------------------------------
def test_second_run_on_a_locked_run_dir(tmp_path, ani_file, capsys):
    """Another process holding run_dir/.lock: one error naming the run_dir and that process's PID; nothing written."""
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        f = open({str(run / '.lock')!r}, "a+")
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.truncate(0); f.write(str(os.getpid())); f.flush()
        print("locked", flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        err = _error(capsys, "run", _config(tmp_path, ani_file))
        assert f"{run}: this run_dir is in use by another kdframe process (PID {holder.pid}, holding {run / '.lock'})" in err
        assert "wait for it to finish or stop it, or use another run_dir" in err
        assert sorted(p.name for p in run.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()
    _ok(capsys, "train", _config(tmp_path, ani_file))  # released: the run goes on


def test_lock_is_given_back_and_shared_within_a_process(tmp_path, ani_file, capsys):
    """`kdframe run` twice in one process (and a Run that was never closed) do not lock each other out."""
    from kdframe import io
    from kdframe.workflows.base import Run, load_config

    config = _config(tmp_path, ani_file)
    workflow, cfg = load_config(config)
    unclosed = Run(cfg, config, workflow, progress=False)
    assert not (tmp_path / "run").exists()  # setting up writes nothing
    unclosed.lock()
    assert (tmp_path / "run" / ".lock").read_text().strip() == str(os.getpid())
    _ok(capsys, "train", config)
    _ok(capsys, "run", config)
    unclosed.close()
    assert (tmp_path / "run").resolve() not in io._HELD


def test_only_rank_0_locks_and_every_rank_stops(tmp_path, ani_file, monkeypatch):
    """Under torchrun rank 0 takes the lock; the others learn its outcome (one all-reduce) and stop with it."""
    from kdframe import distributed
    from kdframe.errors import RunStateError
    from kdframe.workflows.base import Run, load_config

    config = _config(tmp_path, ani_file)
    workflow, cfg = load_config(config)
    run = Run(cfg, config, workflow, progress=False)
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    monkeypatch.setattr(distributed, "sum_all", lambda values: [1.0])  # rank 0 could not lock
    with pytest.raises(RunStateError, match="this run_dir is in use by another kdframe process"):
        run.lock()
    monkeypatch.setattr(distributed, "sum_all", lambda values: [0.0])
    run.lock()
    assert not (tmp_path / "run").exists()  # a rank other than 0 neither makes the folder nor locks


# --- permissions and disk -----------------------------------------------------------------------------
def _failing_mkstemp(monkeypatch, code, only=""):
    """mkstemp (each atomic write's first step) raising what a read-only folder or a full disk gives."""
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        if only in str(kwargs.get("prefix", "")):
            raise OSError(code, os.strerror(code), str(kwargs.get("dir")))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_full_disk_during_training(tmp_path, ani_file, capsys, monkeypatch):
    """fsync failing with ENOSPC (as a full disk does): the file is named, no temporary file is left behind."""
    import kdframe.io

    real = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").split("/")[-1].startswith(".checkpoint.pt."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    monkeypatch.setattr(kdframe.io.os, "fsync", fsync)
    stage = tmp_path / "run" / "potential"
    err = _error(capsys, "run", _config(tmp_path, ani_file))
    assert err == (f"kdframe: error: {stage / 'checkpoint.pt'}: cannot write (no space left on the disk); free some "
                   "space, then run the same command again (finished work is kept)\n")
    assert sorted(p.name for p in stage.iterdir()) == ["stage.json"]  # no checkpoint, no temporary file
    monkeypatch.undo()
    _ok(capsys, "run", _config(tmp_path, ani_file))  # space freed: the same command goes on


def test_read_only_run_dir(tmp_path, ani_file, capsys, monkeypatch):
    _failing_mkstemp(monkeypatch, errno.EACCES)
    err = _error(capsys, "run", _config(tmp_path, ani_file))
    stage = tmp_path / "run" / "potential"
    assert err == (f"kdframe: error: {stage / 'stage.json'}: cannot write (permission denied); make it writable or "
                   "write elsewhere (e.g. another run_dir)\n")


def test_run_dir_that_cannot_be_made(tmp_path, ani_file, capsys, monkeypatch):
    import pathlib

    real = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self == tmp_path / "run":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    err = _error(capsys, "run", _config(tmp_path, ani_file))
    assert err.startswith(f"kdframe: error: {tmp_path / 'run'}: cannot write (permission denied)")


def test_finished_run_in_a_read_only_folder_prints_its_table(trained, capsys, monkeypatch):
    """Nothing needs writing but the report: the table is printed and the report's failure is a warning."""
    import kdframe.io

    config, stage, _, out = trained
    run = stage.parent
    (run / "report.md").unlink()
    before = _snapshot(run)
    real_open = open

    def read_only_open(file, mode="r", *args, **kwargs):
        if str(file).startswith(str(run)) and any(c in mode for c in "wax+"):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(kdframe.io, "open", read_only_open, raising=False)  # the run_dir's .lock
    _failing_mkstemp(monkeypatch, errno.EROFS)
    result = _ok(capsys, "run", config)
    assert result.out == out.split("\n\nReport:")[0] + "\n"  # the same table, no report path
    assert result.err.startswith("kdframe: warning: report.md could not be written (")
    assert "cannot write (read-only file system)" in result.err and result.err.count("\n") == 1
    assert _snapshot(run) == before


def test_unreadable_data_file(tmp_path, ani_file, capsys, monkeypatch):
    """A data file the user may not read (PermissionError from the reader): its path and what to check."""
    import kdframe.workflows.base

    def unreadable(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(kdframe.workflows.base, "read_dataset", unreadable)
    err = _error(capsys, "run", _config(tmp_path, ani_file))
    assert err == f"kdframe: error: {ani_file}: permission denied; check the permissions of that file and its folder\n"
    assert not (tmp_path / "run").exists()


# --- config values checked before anything is written ------------------------------------------------
@pytest.mark.parametrize("old, new, expected", [
    ("seed: 0", "seed: -1", "seed: Input should be greater than or equal to 0"),
    ("seed: 0", "seed: 4294967296", "seed: Input should be less than or equal to 4294967295"),
    ("run_dir: RUN", "run_dir: ''", "run_dir: empty; give the folder for this run's models and report"),
    ("run_dir: RUN", "run_dir: '  '", "run_dir: empty"),
], ids=["negative seed", "seed too large", "empty run_dir", "blank run_dir"])
def test_bad_seed_and_run_dir(tmp_path, ani_file, capsys, monkeypatch, old, new, expected):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    config = _config(tmp_path, ani_file)
    config.write_text(config.read_text().replace(f"run_dir: {tmp_path / 'run'}", "run_dir: RUN").replace(old, new)
                      .replace("run_dir: RUN", f"run_dir: {tmp_path / 'run'}"))
    assert expected in _error(capsys, "run", config)
    assert not (tmp_path / "run").exists() and not list(work.iterdir())  # nothing made, not even the run_dir


def test_setting_up_a_run_writes_nothing(tmp_path, ani_file):
    """Run.__init__ validates everything and reads the data; the run_dir appears with the first stage."""
    from kdframe.workflows.base import Run, load_config

    config = _config(tmp_path, ani_file)
    workflow, cfg = load_config(config)
    with Run(cfg, config, workflow, progress=False):
        assert not (tmp_path / "run").exists()


def test_hdf5_file_without_write_permission(tmp_path, capsys, monkeypatch):
    """h5py reports EACCES with the file named only in its message: the CLI still names it."""
    import kdframe.workflows.base

    def h5py_like(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, f"Unable to synchronously open file (unable to open file: name = "
                                            f"'{path}', errno = 13, error message = 'Permission denied')")

    monkeypatch.setattr(kdframe.workflows.base, "read_dataset", h5py_like)
    data = tmp_path / "locked.h5"
    data.write_bytes(b"")
    config = tmp_path / "c.yaml"
    config.write_text(textwrap.dedent(CONFIG.format(run_dir=tmp_path / "run", data=data, width=4)))
    err = _error(capsys, "run", config)
    assert err == f"kdframe: error: {data}: permission denied; check the permissions of that file and its folder\n"
