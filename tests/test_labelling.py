"""The resumable labelling runner: journal, merge, failures, selection, kill -9 and resume (xtb only, fast)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("tblite")
pytest.importorskip("kdframe_qc")

from kdframe.errors import ConfigError, DataError  # noqa: E402
from kdframe.labeler import Labeler, LabelError, get_labeler  # noqa: E402
from kdframe.labelling import journal_path, label_file, merge, read_items, select_items  # noqa: E402

WATER = (np.array([8, 1, 1]), np.array([[0.0, 0.0, 0.12], [0.0, 0.76, -0.47], [0.0, -0.76, -0.47]]))
AMMONIA = (np.array([7, 1, 1, 1]), np.array([[0.0, 0.0, 0.12], [0.0, 0.94, -0.27], [0.81, -0.47, -0.27],
                                              [-0.81, -0.47, -0.27]]))


def make_file(path: Path, n_conf: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        for name, (z, pos) in {"water": WATER, "ammonia": AMMONIA}.items():
            g = f.create_group(name)
            g.create_dataset("atomic_numbers", data=z)
            g.create_dataset("coordinates", data=pos + rng.normal(0, 0.05, (n_conf, *pos.shape)))
            g.attrs["smiles"] = {"water": "O", "ammonia": "N"}[name]
            g.attrs["origins"] = json.dumps(["opt:c0"] + ["nms:300K:c0"] * (n_conf - 1))
    return path


def labels(path: Path, method: str = "xtb") -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {f"{g}/{k}": f[g][k][()] for g in f for k in f[g] if k.startswith(method + ".")}


class Counting(Labeler):
    """Wraps xtb; counts calls, optionally fails chosen conformations."""

    method = "xtb"
    provides = ("energy", "forces")

    def __init__(self, fail_at: tuple[int, ...] = ()):
        self.inner = get_labeler("xtb")
        self.calls = 0
        self.fail_at = fail_at

    def compute(self, atomic_numbers, positions):
        self.calls += 1
        if len(atomic_numbers) == 3 and positions[0, 2] in self.fail_at:
            raise LabelError("SCF not converged")
        return self.inner.compute(atomic_numbers, positions)

    def settings(self):
        return self.inner.settings()


def test_label_merge_and_skip(tmp_path):
    path = make_file(tmp_path / "d.h5")
    summary = label_file(path, "xtb", workers=0, progress=False)
    assert (summary.selected, summary.done, summary.failed) == (12, 12, 0)
    out = labels(path)
    assert out["water/xtb.energy"].shape == (6,) and out["ammonia/xtb.forces"].shape == (6, 4, 3)
    assert all(np.isfinite(v).all() for v in out.values())
    with h5py.File(path, "r") as f:
        prov = json.loads(f.attrs["provenance.xtb"])
    assert prov["settings"]["method"] == "GFN2-xTB" and "tblite" in prov["versions"]
    again = Counting()
    assert label_file(path, "xtb", workers=0, progress=False, labeler=again).skipped == 12 and again.calls == 0


def test_worker_processes_match_in_process(tmp_path):
    a, b = make_file(tmp_path / "a.h5"), make_file(tmp_path / "b.h5")
    label_file(a, "xtb", workers=0, progress=False)
    label_file(b, "xtb", workers=1, progress=False, merge_every=5)
    la, lb = labels(a), labels(b)
    assert all(np.array_equal(la[k], lb[k]) for k in la)


def test_merges_take_at_most_a_tenth_of_the_time_with_cheap_labels(tmp_path, monkeypatch):
    """Each merge copies the whole file: with labels cheaper than a merge, merge_every=1 must not merge per item."""
    from kdframe import labelling

    real, calls = labelling.merge, []

    def slow_merge(*args, **kwargs):
        calls.append(1)
        time.sleep(0.05)  # a merge dearer than a label: the next one waits 0.5 s, longer than the whole run
        return real(*args, **kwargs)

    monkeypatch.setattr(labelling, "merge", slow_merge)
    path = make_file(tmp_path / "d.h5")
    assert label_file(path, "xtb", workers=0, progress=False, merge_every=1).done == 12
    assert len(calls) <= 4  # before labelling, after the first merge_every items, at the end (and at most one more)
    assert all(np.isfinite(v).all() for v in labels(path).values())


def test_failures_recorded_not_retried(tmp_path):
    path = make_file(tmp_path / "d.h5")
    with h5py.File(path, "r") as f:
        bad_z = f["water/coordinates"][2, 0, 2]
    summary = label_file(path, "xtb", workers=0, progress=False, labeler=Counting(fail_at=(bad_z,)))
    assert summary.failed == 1
    with h5py.File(path, "r") as f:
        energy = f["water/xtb.energy"][()]
        assert json.loads(f["water"].attrs["xtb.failures"]) == {"2": "SCF not converged"}
        assert np.isnan(energy[2]) and np.isfinite(np.delete(energy, 2)).all()
    again = Counting()
    assert label_file(path, "xtb", workers=0, progress=False, labeler=again).done == 0 and again.calls == 0
    retry = Counting()
    assert label_file(path, "xtb", workers=0, progress=False, labeler=retry, retry_failed=True).done == 1
    with h5py.File(path, "r") as f:
        assert np.isfinite(f["water/xtb.energy"][()]).all() and "xtb.failures" not in f["water"].attrs


def test_selection_subset_then_rest(tmp_path):
    path = make_file(tmp_path / "d.h5", n_conf=10)
    items = read_items(path)
    sub = select_items(items, per_molecule=3)
    assert [it.index for it in sub if it.group == "water"] == [0, 4, 9]
    assert sub[0].group == "water"  # smallest (fewest electrons) first
    assert len(select_items(items, per_molecule=3, limit=4)) == 4
    assert {it.index for it in select_items(items, origin="opt")} == {0}
    with pytest.raises(ConfigError, match="benzene"):
        select_items(items, molecules=["benzene"])
    label_file(path, "xtb", workers=0, progress=False, per_molecule=3)
    assert np.isfinite(labels(path)["water/xtb.energy"]).sum() == 3
    rest = Counting()
    label_file(path, "xtb", workers=0, progress=False, labeler=rest)
    assert rest.calls == 14 and np.isfinite(labels(path)["ammonia/xtb.energy"]).all()


def test_journals_kept_in_another_directory(tmp_path):
    """``journals=DIR`` (``--journals``, as data/make_bundled.sh passes data/labelling): <file>.labelling/ there,
    nothing beside the file, and a copy of the file elsewhere resumes from the same journals."""
    path = make_file(tmp_path / "d.h5")
    elsewhere = tmp_path / "journals"
    label_file(path, "xtb", workers=0, progress=False, limit=5, journals=elsewhere)
    assert journal_path(path, "xtb", elsewhere) == elsewhere / "d.h5.labelling" / "xtb.jsonl"
    assert journal_path(path, "xtb", elsewhere).is_file() and not (tmp_path / "d.h5.labelling").exists()
    (tmp_path / "copy").mkdir()
    fresh = make_file(tmp_path / "copy" / "d.h5")  # the same geometries: the journal attaches to them
    assert merge(fresh) == 0 and merge(fresh, elsewhere) > 0
    assert sum(int(np.isfinite(v).sum()) for k, v in labels(fresh).items() if k.endswith(".energy")) == 5
    again = Counting()
    summary = label_file(fresh, "xtb", workers=0, progress=False, labeler=again, journals=elsewhere)
    assert (summary.skipped, summary.done, again.calls) == (5, 7, 7)


def test_unknown_method_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="wb97x_dz"):
        label_file(make_file(tmp_path / "d.h5"), "b3lyp_nope", workers=0)
    with pytest.raises(DataError, match="not found"):
        label_file(tmp_path / "missing.h5", "xtb", workers=0)


def test_torn_journal_line_is_ignored(tmp_path):
    path = make_file(tmp_path / "d.h5")
    label_file(path, "xtb", workers=0, progress=False, limit=5)
    jp = journal_path(path, "xtb")
    with open(jp, "ab") as f:
        f.write(b'{"type": "item", "group": "water", "index": 5, "ok": tr')  # kill -9 mid-write
    merge(path)
    label_file(path, "xtb", workers=0, progress=False)
    assert all(np.isfinite(v).all() for v in labels(path).values())
    assert sum(1 for line in jp.read_text().splitlines() if '"type": "item"' in line) == 13  # 12 + torn line


SLOW_LABELLING = textwrap.dedent("""
    import sys, time
    from kdframe.labeler import get_labeler
    from kdframe.labelling import label_file
    xtb = get_labeler("xtb")
    class Slow(type(xtb)):
        def compute(self, z, pos):
            time.sleep(0.3)
            return super().compute(z, pos)
    label_file(sys.argv[1], "xtb", workers=0, progress=False, merge_every=2, labeler=Slow())
""")


def test_kill_9_then_resume_gives_identical_results(tmp_path):
    reference, path = make_file(tmp_path / "ref.h5"), make_file(tmp_path / "d.h5")
    label_file(reference, "xtb", workers=0, progress=False)
    jp = journal_path(path, "xtb")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_LABELLING, str(path)])
    deadline = time.time() + 60
    while time.time() < deadline and (not jp.exists() or jp.read_text().count('"type": "item"') < 4):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {(r["group"], r["index"]): r for r in map(json.loads, jp.read_text().splitlines()) if r["type"] == "item"}
    assert 4 <= len(before) < 12
    labels(path)  # the file is intact (a merge killed midway leaves only a temp file)
    resumed = Counting()
    label_file(path, "xtb", workers=0, progress=False, labeler=resumed)
    assert resumed.calls == 12 - len(before)
    out, ref = labels(path), labels(reference)
    assert all(np.array_equal(out[k], ref[k]) for k in ref)
    after = {(r["group"], r["index"]): r for r in map(json.loads, jp.read_text().splitlines()) if r["type"] == "item"}
    assert all(after[k]["values"] == v["values"] for k, v in before.items())
    with h5py.File(path, "r") as f:
        for (group, index), record in before.items():
            assert f[group]["xtb.energy"][index] == record["values"]["energy"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_data_command_sample_label_info(tmp_path, capsys):
    from kdframe.cli import main

    out = tmp_path / "s.h5"
    assert main(["data", "sample", str(out), "--smiles", "water:O", "C#N", "--conformers", "2", "--normal-modes", "4",
                 "--md-frames", "2", "--md-temperatures", "500"]) == 0
    with h5py.File(out, "r") as f:
        assert set(f) == {"water", "CHN"} and f["CHN"].attrs["smiles"] == "C#N"
        assert f["water/coordinates"].shape == (7, 3, 3) and "provenance.sample" in f.attrs
    assert main(["data", "sample", str(out), "--smiles", "O"]) == 2  # exists: refuses without --append
    assert main(["data", "sample", str(tmp_path / "x.h5"), "--smiles", "bad:C1CC"]) == 2
    assert "invalid SMILES" in capsys.readouterr().err

    assert main(["data", "label", str(out), "--method", "xtb", "--workers", "0", "--no-progress"]) == 0
    assert main(["data", "info", str(out), "--per-molecule"]) == 0
    text = capsys.readouterr().out
    assert "2 molecules, 14 conformations" in text and "xtb.energy" in text and "14/14" in text


def test_hessian_job_by_finite_differences_of_forces(tmp_path, capsys):
    """`kdframe data label --hessian`: a symmetric Hessian whose product with a displacement is the force change."""
    from kdframe.cli import main
    from kdframe.data import read_dataset
    from kdframe.units import HARTREE_TO_EV

    path = make_file(tmp_path / "h.h5", n_conf=2)
    args = ["data", "label", str(path), "--method", "xtb", "--molecules", "water", "--workers", "0", "--no-progress"]
    assert main(args) == 0 and main([*args, "--hessian"]) == 0
    assert main([*args, "--hessian"]) == 0 and "2 selected, 2 already done, 0 labelled" in capsys.readouterr().out
    with h5py.File(path) as f:
        hessians, x = f["water/xtb.hessian"][()], f["water/coordinates"][()]
        forces = f["water/xtb.forces"][()]
        assert np.isnan(f["ammonia/xtb.hessian"][()]).all() and "provenance.xtb+hessian" in f.attrs
    assert hessians.shape == (2, 9, 9) and np.allclose(hessians, hessians.transpose(0, 2, 1))
    xtb = get_labeler("xtb")
    d = np.random.default_rng(1).normal(0, 1e-3, (3, 3))
    moved = xtb.compute(WATER[0], x[0] + d)["forces"] - forces[0]
    assert np.allclose(-hessians[0] @ d.ravel(), moved.ravel(), rtol=0.05, atol=2e-5)
    data = read_dataset(path, {"energy": "xtb.energy", "hessian": "xtb.hessian"})
    water = data.subset(np.flatnonzero(np.isfinite(data.labels["hessian"][data.atom_ptr[:-1], 0, 0, 0])))
    assert water.labels["hessian"].shape == (6, 3, 4, 3)  # padded to ammonia's 4 atoms
    assert np.allclose(water.labels["hessian"][:3, :, :3].reshape(9, 9), hessians[0] * HARTREE_TO_EV)


def test_a_killed_sample_run_carries_on_with_append(tmp_path, monkeypatch, capsys):
    """`data sample` writes as it goes; `--append` after a crash gives the file a straight run gives."""
    from kdframe import sampling
    from kdframe.cli import main
    from kdframe.commands import data

    args = ["--smiles", "water:O", "hcn:C#N", "--conformers", "1", "--normal-modes", "2", "--md-frames", "0"]
    monkeypatch.setattr(data, "SAMPLE_WRITE_SECONDS", 0)  # a write after every molecule
    assert main(["data", "sample", str(tmp_path / "straight.h5"), *args]) == 0
    real = sampling.sample_molecule

    def dies_on_hcn(name, *rest):
        if name == "hcn":
            raise KeyboardInterrupt  # a kill, after water was sampled
        return real(name, *rest)

    monkeypatch.setattr(sampling, "sample_molecule", dies_on_hcn)
    assert main(["data", "sample", str(tmp_path / "resumed.h5"), *args]) == 130  # interrupted
    with h5py.File(tmp_path / "resumed.h5", "r") as f:
        assert set(f) == {"water"}
    monkeypatch.setattr(sampling, "sample_molecule", real)
    assert main(["data", "sample", str(tmp_path / "resumed.h5"), "--append", *args]) == 0
    with h5py.File(tmp_path / "straight.h5", "r") as a, h5py.File(tmp_path / "resumed.h5", "r") as b:
        assert set(a) == set(b) == {"water", "hcn"}
        for name in a:
            assert np.array_equal(a[name]["coordinates"][()], b[name]["coordinates"][()])
    other = ["--smiles", "methane:C", "--conformers", "1", "--normal-modes", "3", "--md-frames", "0"]
    assert main(["data", "sample", str(tmp_path / "resumed.h5"), "--append", *other]) == 2
    assert "sampled with other settings (normal_modes 2)" in capsys.readouterr().err


def test_sampling_in_worker_processes_gives_the_serial_results_in_order(tmp_path):
    """`sample_molecules(workers=2)` samples in worker processes and yields what one process gives, in input order;
    a molecule xTB fails on is named and skipped; the thread settings of this process are left as they were."""
    import multiprocessing

    from kdframe.labelling import THREAD_VARIABLES
    from kdframe.sampling import SamplingSettings, sample_molecules

    molecules = [("propanol", "CCCO"), ("water", "O"), ("uranium", "[U]"), ("hcn", "C#N"), ("methane", "C")]
    settings = SamplingSettings(conformers=1, normal_modes=2, md_frames=1, md_temperatures=(500.0,))
    env = {var: os.environ.get(var) for var in THREAD_VARIABLES}
    xtb = get_labeler("xtb")
    parallel = sample_molecules(molecules, settings, xtb, workers=2)
    first = next(parallel)
    assert multiprocessing.active_children()  # a pool of processes, not this one
    results = [first, *parallel]
    assert {var: os.environ.get(var) for var in THREAD_VARIABLES} == env
    assert [name for name, _ in results] == [name for name, _ in molecules]
    assert isinstance(results[2][1], str) and "uranium" not in results[2][1]  # the reason; the name is beside it
    serial = list(sample_molecules(molecules, settings, xtb, workers=1))
    for (_, a), (_, b) in zip(results, serial):
        assert a == b if isinstance(a, str) else np.array_equal(a.coordinates, b.coordinates) and a.origins == b.origins


def test_data_sample_with_workers_writes_the_same_file(tmp_path):
    from kdframe.cli import main

    args = ["--smiles", "water:O", "hcn:C#N", "--conformers", "1", "--normal-modes", "2", "--md-frames", "0"]
    assert main(["data", "sample", str(tmp_path / "one.h5"), *args]) == 0
    assert main(["data", "sample", str(tmp_path / "two.h5"), "--workers", "2", *args]) == 0
    with h5py.File(tmp_path / "one.h5", "r") as a, h5py.File(tmp_path / "two.h5", "r") as b:
        assert set(a) == set(b) == {"water", "hcn"} and a.attrs["provenance.sample"] == b.attrs["provenance.sample"]
        for name in a:
            assert np.array_equal(a[name]["coordinates"][()], b[name]["coordinates"][()])


def test_a_molecule_that_cannot_be_sampled_is_named_and_skipped(tmp_path, monkeypatch, capsys):
    from kdframe import sampling
    from kdframe.cli import main
    from kdframe.errors import DataError

    real = sampling.sample_molecule

    def cannot_embed_hcn(name, smiles, *rest):
        if name == "hcn":
            raise DataError(f"RDKit could not embed {smiles!r}")
        return real(name, smiles, *rest)

    monkeypatch.setattr(sampling, "sample_molecule", cannot_embed_hcn)
    out = tmp_path / "s.h5"
    assert main(["data", "sample", str(out), "--smiles", "hcn:C#N", "water:O", "--conformers", "1",
                 "--normal-modes", "2", "--md-frames", "0"]) == 0
    captured = capsys.readouterr()
    assert "hcn: skipped (RDKit could not embed 'C#N')" in captured.err
    assert "1 molecules, 3 conformations added; 1 skipped: hcn" in captured.out
    with h5py.File(out, "r") as f:
        assert set(f) == {"water"}
