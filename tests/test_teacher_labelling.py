"""``kdframe data teacher-label``: teacher ensembles label files at scale, sharded and resumable (toy models, tiny)."""

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
import torch

from kdframe.cli import main
from kdframe.config import BUNDLED_DIR
from kdframe.data.packed import PackedDataset
from kdframe.data.readers import read_dataset
from kdframe.errors import ConfigError
from kdframe.evaluation import predict
from kdframe.plugins import registry
from kdframe.potential import Ensemble, Potential
from kdframe.teacher_labelling import parts_dir, read_journal, spread_of
from kdframe.units import HARTREE_TO_EV

KEYS = {"energy": "teacher.energy", "forces": "teacher.forces", "energy_std": "teacher.energy_std",
        "forces_std": "teacher.forces_std"}


def _toy(seed: int, species=(1, 6, 7, 8)) -> Potential:
    torch.manual_seed(seed)
    return Potential(registry().architectures["toy"], {"width": 8}, list(species), ["energy"]).double()


def _members(tmp_path, n: int = 3, species=(1, 6, 7, 8)) -> list[str]:
    tmp_path.mkdir(exist_ok=True)
    args = []
    for i in range(n):
        _toy(i, species).save(tmp_path / f"m{i}.pt")
        args += ["--model", str(tmp_path / f"m{i}.pt")]
    return args


def _label(*argv) -> int:
    return main(["data", "teacher-label", *map(str, argv), "--no-progress"])


def _packed(path: Path, keys=KEYS) -> dict[str, np.ndarray]:
    data = PackedDataset.open(path, keys)
    batch = data.batch(np.arange(len(data)))
    return {"species": batch.species.numpy(), "positions": batch.positions.numpy(), "molecule": data.molecule,
            **{k: batch.labels[k].numpy() for k in keys}}


def _error(capsys, *argv) -> str:
    assert _label(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdframe: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_labels_are_the_ensembles_own_predictions_with_spreads(tmp_path, ani_file, capsys):
    out = tmp_path / "labelled.h5"
    assert _label(ani_file, out, *_members(tmp_path), "--chunk-size", 10, "--batch-size", 7, "--per-atom-spread") == 0
    printed = capsys.readouterr().out
    assert "48/48 configurations labelled (5 chunks, 0 already done)" in printed and "skipped: none" in printed
    assert not parts_dir(out).exists()

    members = [Potential.load(tmp_path / f"m{i}.pt") for i in range(3)]
    data = read_dataset(ani_file, {})
    preds = [predict(m, data) for m in members]
    energies, forces = np.stack([p.energy for p in preds]), np.stack([p.forces for p in preds])
    ensemble = predict(Ensemble(members), data)
    got = _packed(out, {**KEYS, "atoms": "teacher.forces_std_atoms"})
    assert np.array_equal(got["species"], data.species) and np.array_equal(got["positions"], data.positions)
    assert PackedDataset.open(out, {}).molecule_names == data.molecule_names
    assert np.allclose(got["energy"], ensemble.energy, rtol=0, atol=1e-9)
    assert np.allclose(got["energy"], energies.mean(0), rtol=0, atol=1e-9)
    assert np.allclose(got["forces"], ensemble.forces, rtol=0, atol=1e-9)
    assert np.allclose(got["energy_std"], energies.std(0), rtol=1e-9, atol=1e-12) and got["energy_std"].min() > 1e-4
    assert np.allclose(got["forces_std"], spread_of(forces, data.n_atoms), rtol=1e-9, atol=1e-12)
    assert np.allclose(got["atoms"], forces.std(0), rtol=1e-9, atol=1e-12)
    with h5py.File(out, "r") as f:
        assert f.attrs["teacher.members"] == 3 and json.loads(f.attrs["teacher.skipped"]) == {}
        assert json.loads(f.attrs["teacher.aligned_to"]) is None
    assert main(["data", "info", str(out)]) == 0  # the spreads' percentiles, to choose a confidence scale from
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    for label, unit in (("forces_std", "eV/Å"), ("energy_std", "eV")):
        median, p90, p99 = np.percentile(got[label], [50, 90, 99])
        assert lines[f"teacher.{label}"].endswith(f"spread: median {median:.3g}, 90th percentile {p90:.3g}, "
                                                  f"99th {p99:.3g} {unit}")
    assert "spread" not in lines["teacher.forces"] + lines["teacher.forces_std_atoms"]


def test_alignment_recovers_known_offsets(tmp_path, ani_file, capsys, monkeypatch):
    members = [_toy(0), _toy(1)]
    monkeypatch.setitem(registry().pretrained, "toy2", lambda: Ensemble([_toy(0), _toy(1)]))
    data = read_dataset(ani_file, {})
    predicted = predict(Ensemble(members), data, forces=False).energy
    shift = {1: -0.5, 6: -38.0, 7: -54.6, 8: -75.1}  # Hartree
    with h5py.File(ani_file, "a") as f:
        start = 0
        for name in f:
            z, n = f[name]["atomic_numbers"][()], f[name]["coordinates"].shape[0]
            f[name]["other.energy"] = (predicted[start:start + n] + sum(shift[int(a)] for a in z) * HARTREE_TO_EV) \
                / HARTREE_TO_EV
            start += n
    out = tmp_path / "aligned.h5"
    assert _label(ani_file, out, "--pretrained", "toy2", "--align-to", ani_file, "--energy-key", "other.energy",
                  "--chunk-size", 20) == 0
    assert "aligned: per-element offsets (eV) H " in capsys.readouterr().out
    truth = read_dataset(ani_file, {"energy": "other.energy"}).labels["energy"]
    assert np.allclose(_packed(out)["energy"], truth, rtol=0, atol=1e-6)
    with h5py.File(out, "r") as f:
        offsets = json.loads(f.attrs["teacher.offsets"])
        assert json.loads(f.attrs["teacher.aligned_to"])["energy_key"] == "other.energy"
        assert f.attrs["teacher.source"] == "pretrained:toy2"
    for z, hartree in shift.items():
        assert offsets[str(z)] == pytest.approx(hartree * HARTREE_TO_EV, abs=1e-6)


def test_bundled_input_and_alignment_data(tmp_path, capsys):
    """bundled:NAME works for the input and --align-to as in a YAML config."""
    out = tmp_path / "ext.h5"
    assert _label("bundled:extensibility.h5", out, *_members(tmp_path, 1), "--align-to", "bundled:train_pool.h5",
                  "--energy-key", "wb97x_dz.energy") == 0
    assert "aligned: per-element offsets" in capsys.readouterr().out
    assert len(_packed(out)["energy"]) == len(read_dataset(BUNDLED_DIR / "extensibility.h5", {}))


def test_uncovered_element_is_reported_by_name_and_skipped(tmp_path, ani_file, capsys):
    out = tmp_path / "no_n.h5"
    assert _label(ani_file, out, *_members(tmp_path, 2, species=(1, 6, 8)), "--chunk-size", 8) == 0
    captured = capsys.readouterr()
    assert "molecule ammonia: 12 configuration(s) skipped: element(s) N not covered" in captured.err
    assert "36/48 configurations labelled" in captured.out and "ammonia (12 configurations; N)" in captured.out
    labelled = PackedDataset.open(out, {})
    assert len(labelled) == 36 and "ammonia" not in labelled.molecule_names
    assert 7 not in labelled.elements()
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["teacher.skipped"])["ammonia"] == {"configurations": 12, "elements": ["N"]}


def test_changed_teacher_or_options_refuse_to_resume(tmp_path, ani_file, capsys):
    out = tmp_path / "t.h5"
    models = _members(tmp_path, 2)
    assert _label(ani_file, out, *models, "--chunk-size", 16, "--keep-parts") == 0
    assert len(read_journal(parts_dir(out) / "journal.jsonl")[1]) == 3
    _toy(7).save(tmp_path / "m1.pt")  # the same file name, other weights
    err = _error(capsys, ani_file, out, *models, "--chunk-size", 16)
    assert "another teacher, input or options (changed: teacher_fingerprint)" in err
    err = _error(capsys, ani_file, out, "--model", tmp_path / "m0.pt", "--chunk-size", 8)
    assert "changed: chunk_size, teacher, teacher_fingerprint" in err


def test_bad_inputs_are_one_error_line(tmp_path, ani_file, capsys):
    models = _members(tmp_path, 1)
    assert "not found" in _error(capsys, tmp_path / "nope.h5", tmp_path / "o.h5", *models)
    assert "not both" in _error(capsys, ani_file, tmp_path / "o.h5", *models, "--pretrained", "ani1x")
    assert "--energy-key" in _error(capsys, ani_file, tmp_path / "o.h5", *models, "--align-to", ani_file)
    assert "unknown pretrained model 'nope'" in _error(capsys, ani_file, tmp_path / "o.h5", "--pretrained", "nope")
    assert "is the source file" in _error(capsys, ani_file, ani_file, *models)
    assert "not found" in _error(capsys, ani_file, tmp_path / "o.h5", *models, "--align-to", ani_file,
                                 "--energy-key", "nope.energy")
    assert "no configuration has only elements the teacher" in _error(capsys, ani_file, tmp_path / "o.h5",
                                                                      *_members(tmp_path / "co", 1, species=(6, 8)))
    (tmp_path / "o.h5").write_text("")
    assert "exists" in _error(capsys, ani_file, tmp_path / "o.h5", *models)
    assert "worker processes label on the CPU" in _error(capsys, ani_file, tmp_path / "p.h5", *models,
                                                         "--workers", "2", "--device", "cuda")


def test_workers_match_one_process(tmp_path, ani_file):
    models = [*_members(tmp_path, 2), "--align-to", ani_file, "--energy-key", "morse.energy"]
    assert _label(ani_file, tmp_path / "one.h5", *models, "--chunk-size", 12) == 0
    assert _label(ani_file, tmp_path / "two.h5", *models, "--chunk-size", 12, "--workers", 2) == 0
    one, two = _packed(tmp_path / "one.h5"), _packed(tmp_path / "two.h5")
    assert all(np.array_equal(one[k], two[k]) for k in one)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_subset_is_labelled_as_in_the_whole_file(tmp_path, ani_file, workers):
    """``confs`` labels only those configurations (a source's ``limit``), each as when the whole file is labelled."""
    from kdframe.teacher_labelling import TeacherSpec, teacher_label

    models = tuple(_members(tmp_path, 2)[1::2])
    spec = TeacherSpec(models=models)
    teacher_label(ani_file, tmp_path / "all.h5", spec, chunk_size=12)
    confs = [33, 1, 5, 6, 47, 20]  # kept in this order
    summary = teacher_label(ani_file, tmp_path / "some.h5", spec, chunk_size=4, workers=workers, confs=confs)
    assert summary.configurations == len(confs)
    whole = PackedDataset.open(tmp_path / "all.h5", KEYS).subset(confs)
    expected = whole.batch(np.arange(len(confs)))
    got = _packed(tmp_path / "some.h5")
    assert np.array_equal(got["positions"], expected.positions.numpy())
    assert all(np.allclose(got[k], expected.labels[k].numpy(), rtol=0, atol=1e-9) for k in KEYS)
    with pytest.raises(ConfigError, match="each once"):
        teacher_label(ani_file, tmp_path / "bad.h5", spec, confs=[1, 1, 48])


# Run from a file, not -c: spawned workers run it again (as __mp_main__) before they unpickle their initialiser, so
# they get the serialised one.
ONE_AT_A_TIME = textwrap.dedent("""
    import fcntl, sys
    sys.path.insert(0, sys.argv[1])
    import shared_fixtures  # noqa: F401 - registers the toy architecture, one torch thread
    import kdframe.teacher_labelling as tl

    inner = tl._init_worker
    def serialised(*args):
        with open(sys.argv[2], "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            inner(*args)
    tl._init_worker = serialised

    if __name__ == "__main__":
        from kdframe.cli import main
        sys.exit(main(sys.argv[3:]))
""")


def test_aligned_workers_each_align_their_own_teacher(tmp_path, ani_file):
    """Workers that start one after another (the usual order) all accept the teacher and apply the offsets once:
    an earlier worker's alignment must not reach the copy a later one receives."""
    models = [*_members(tmp_path, 2), "--align-to", ani_file, "--energy-key", "morse.energy", "--chunk-size", 4]
    assert _label(ani_file, tmp_path / "one.h5", *models) == 0
    (tmp_path / "serialised.py").write_text(ONE_AT_A_TIME)
    argv = ["data", "teacher-label", str(ani_file), str(tmp_path / "two.h5"), *map(str, models), "--workers", "2",
            "--no-progress"]
    run = subprocess.run([sys.executable, str(tmp_path / "serialised.py"), str(Path(__file__).parent),
                          str(tmp_path / "init.lock"), *argv], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "Exception in initializer" not in run.stderr, run.stderr
    one, two = _packed(tmp_path / "one.h5"), _packed(tmp_path / "two.h5")
    assert all(np.array_equal(one[k], two[k]) for k in one)


SLOW = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    import shared_fixtures  # noqa: F401 - registers the toy architecture, one torch thread
    import kdframe.teacher_labelling as tl
    from kdframe.cli import main

    inner = tl.label_chunk
    def slow(*args, **kwargs):
        time.sleep(0.4)
        return inner(*args, **kwargs)
    tl.label_chunk = slow
    sys.exit(main(sys.argv[2:]))
""")


def test_kill_9_then_resume_gives_identical_values(tmp_path, ani_file):
    models = _members(tmp_path, 2)
    options = [*models, "--chunk-size", 4, "--batch-size", 3]
    assert _label(ani_file, tmp_path / "reference.h5", *options) == 0
    out = tmp_path / "resumed.h5"
    journal = parts_dir(out) / "journal.jsonl"
    argv = ["data", "teacher-label", str(ani_file), str(out), *map(str, options), "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-c", SLOW, str(Path(__file__).parent), *argv])
    deadline = time.time() + 60
    while time.time() < deadline and (not journal.exists() or journal.read_text().count('"type": "chunk"') < 3):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(read_journal(journal)[1])
    assert 3 <= finished < 12 and not out.exists()
    assert _label(ani_file, out, *options) == 0
    reference, resumed = _packed(tmp_path / "reference.h5"), _packed(out)
    assert all(np.array_equal(reference[k], resumed[k]) for k in reference)
    with h5py.File(tmp_path / "reference.h5", "r") as a, h5py.File(out, "r") as b:
        assert a.attrs["content_hash"] == b.attrs["content_hash"]
    assert not parts_dir(out).exists() and not list(tmp_path.glob(".*.tmp"))


HIPNN = {"l_max": 1, "n_interaction_layers": 1, "width": 8, "n_atom_layers": 1, "n_sensitivities": 6,
         "dist_soft_max": 4.0, "dist_hard_max": 5.0}


def test_periodic_boxes_keep_their_cells(tmp_path, capsys):
    import ase
    import ase.io

    cell = np.array([[7.0, 0.0, 0.0], [1.2, 6.8, 0.0], [-0.7, 0.9, 7.1]])
    water = np.array([[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]])
    rng = np.random.default_rng(0)
    boxes = []
    for k in range(6):
        centres = (np.array([[0.1, 0.1, 0.1], [0.6, 0.15, 0.45], [0.2, 0.6, 0.7]]) + rng.uniform(-0.03, 0.03, (3, 3)))
        boxes.append(ase.Atoms("OH2" * 3, positions=np.concatenate([water + c @ cell for c in centres]), cell=cell,
                               pbc=k < 5))
    ase.io.write(tmp_path / "boxes.xyz", boxes, format="extxyz")
    models = []
    for i in range(2):
        torch.manual_seed(i)
        Potential(registry().architectures["hippynn"], HIPNN, [1, 8]).double().save(tmp_path / f"h{i}.pt")
        models += ["--model", tmp_path / f"h{i}.pt"]
    out = tmp_path / "boxes.h5"
    assert _label(tmp_path / "boxes.xyz", out, *models, "--chunk-size", 4) == 0
    data = read_dataset(tmp_path / "boxes.xyz", {})
    labelled = PackedDataset.open(out, {"energy": "teacher.energy"})
    assert labelled.periodic and np.array_equal(labelled.pbc, data.pbc) and np.allclose(labelled.cell[:5], data.cell[:5])
    ensemble = predict(Ensemble([Potential.load(tmp_path / f"h{i}.pt") for i in range(2)]), data)
    assert np.allclose(labelled.labels["energy"], ensemble.energy, rtol=0, atol=1e-9)
    err = _error(capsys, tmp_path / "boxes.xyz", tmp_path / "toy.h5", *_members(tmp_path, 1, species=(1, 8)))
    assert "periodic configurations" in err and "'toy'" in err


def test_packed_input_gives_the_same_labels_as_its_source(tmp_path, ani_file):
    from kdframe.data.packed import pack_ani

    packed = pack_ani(ani_file, tmp_path / "packed.h5")
    models = _members(tmp_path, 2)
    assert _label(ani_file, tmp_path / "from_ani.h5", *models, "--chunk-size", 20) == 0
    assert _label(packed, tmp_path / "from_packed.h5", *models, "--chunk-size", 7) == 0
    a, b = _packed(tmp_path / "from_ani.h5"), _packed(tmp_path / "from_packed.h5")
    assert all(np.allclose(a[k], b[k], rtol=0, atol=1e-12) for k in a)
    assert PackedDataset.open(tmp_path / "from_packed.h5", {}).molecule_names == read_dataset(ani_file, {}).molecule_names


def test_atom_energies_are_the_ensembles_mean_and_sum_to_its_energy(tmp_path, ani_file):
    out = tmp_path / "labelled.h5"
    assert _label(ani_file, out, *_members(tmp_path), "--chunk-size", 10, "--atom-energies", "--workers", 2) == 0
    members = [Potential.load(tmp_path / f"m{i}.pt") for i in range(3)]
    data = read_dataset(ani_file, {})
    expected = Ensemble(members)(data.batch(np.arange(len(data))), forces=False)["atom_energies"][:, 0]
    got = _packed(out, {"energy": "teacher.energy", "atoms": "teacher.atom_energies"})
    assert got["atoms"].shape == (int(data.n_atoms.sum()),)
    assert np.allclose(got["atoms"], expected.detach().numpy(), rtol=0, atol=1e-9)
    conf = np.repeat(np.arange(len(data)), data.n_atoms)
    assert np.allclose(np.bincount(conf, got["atoms"]), got["energy"], rtol=0, atol=1e-9)
    assert _label(ani_file, tmp_path / "plain.h5", *_members(tmp_path)) == 0  # only when asked
    assert "teacher.atom_energies" not in PackedDataset.open(tmp_path / "plain.h5", {}).store.kinds


def _two_alignments(tmp_path, ani_file, monkeypatch) -> tuple[list, Path]:
    """The toy2 teacher (no N: ammonia is skipped) labelled into one.h5 and two.h5 under two alignments; the arguments
    of the second."""
    monkeypatch.setitem(registry().pretrained, "toy2", lambda: Ensemble([_toy(0, (1, 6, 8)), _toy(1, (1, 6, 8))]))
    truth = tmp_path / "truth.h5"  # two levels of theory with other per-element offsets, on what the teacher covers
    truth.write_bytes(Path(ani_file).read_bytes())
    with h5py.File(truth, "a") as f:
        del f["ammonia"]
        for group in f.values():
            z, x = group["atomic_numbers"][()], group["coordinates"][:, 0, 0]
            for key, per_h in (("one.energy", -0.5), ("two.energy", -0.47)):
                group[key] = x * 0.01 + per_h * (z == 1).sum() - 38.0
    options = ["--pretrained", "toy2", "--align-to", truth, "--chunk-size", 7, "--atom-energies", "--per-atom-spread",
               "--hvp"]  # offsets do not move H·v: copied as it is
    assert _label(ani_file, tmp_path / "one.h5", *options, "--energy-key", "one.energy") == 0
    assert _label(ani_file, tmp_path / "two.h5", *options, "--energy-key", "two.energy") == 0
    return [*options, "--energy-key", "two.energy"], truth


REALIGNED_KEYS = {**KEYS, "atoms": "teacher.atom_energies", "per_atom": "teacher.forces_std_atoms",
                  "hvp": "teacher.hvp", "probe": "teacher.hvp_probe"}


def test_labels_of_another_alignment_are_shifted_not_relabelled(tmp_path, ani_file, capsys, monkeypatch):
    """``--realign FILE``: labels of the same teacher and input under other offsets, shifted to this alignment without
    running the teacher, are the values labelling again gives (ammonia is skipped: the rows map past it)."""
    second, _ = _two_alignments(tmp_path, ani_file, monkeypatch)
    capsys.readouterr()
    with monkeypatch.context() as patch:
        patch.setattr("kdframe.teacher_labelling.label_chunk", None)  # the teacher must not run
        assert _label(ani_file, tmp_path / "shifted.h5", *second, "--realign", tmp_path / "one.h5") == 0
    printed = capsys.readouterr().out
    assert f"7 chunk(s) realigned from {tmp_path / 'one.h5'}" in printed and "36/48 configurations labelled" in printed
    one, two, shifted = (_packed(tmp_path / f"{n}.h5", REALIGNED_KEYS) for n in ("one", "two", "shifted"))
    assert np.abs(one["energy"] - two["energy"]).max() > 0.1  # the two alignments differ
    for key in two:
        assert np.allclose(shifted[key], two[key], rtol=0, atol=1e-9), key
    with h5py.File(tmp_path / "shifted.h5", "r") as f, h5py.File(tmp_path / "two.h5", "r") as g:
        assert f.attrs["teacher.offsets"] == g.attrs["teacher.offsets"]
        assert f.attrs["teacher.realigned_chunks"] == "7 of 7"


def test_an_interrupted_realignment_resumes_with_the_same_values(tmp_path, ani_file, monkeypatch):
    from kdframe import teacher_labelling

    second, _ = _two_alignments(tmp_path, ani_file, monkeypatch)
    write, calls = teacher_labelling.write_shard, []

    def dies_at_the_fourth(path, values):
        calls.append(path)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return write(path, values)

    with monkeypatch.context() as patch:
        patch.setattr("kdframe.teacher_labelling.write_shard", dies_at_the_fourth)
        assert _label(ani_file, tmp_path / "shifted.h5", *second, "--realign", tmp_path / "one.h5") == 130
    assert len(read_journal(parts_dir(tmp_path / "shifted.h5") / "journal.jsonl")[1]) == 3
    (parts_dir(tmp_path / "shifted.h5") / "chunk-000001.npz").write_bytes(b"torn")  # realigned again, not labelled
    with monkeypatch.context() as patch:
        patch.setattr("kdframe.teacher_labelling.label_chunk", None)
        assert _label(ani_file, tmp_path / "shifted.h5", *second, "--realign", tmp_path / "one.h5") == 0
    two, shifted = (_packed(tmp_path / f"{n}.h5", REALIGNED_KEYS) for n in ("two", "shifted"))
    for key in two:
        assert np.allclose(shifted[key], two[key], rtol=0, atol=1e-9), key


def test_labels_that_cannot_be_realigned_are_one_error_naming_why(tmp_path, ani_file, capsys, monkeypatch):
    second, truth = _two_alignments(tmp_path, ani_file, monkeypatch)
    plain = ["--pretrained", "toy2", "--align-to", truth, "--energy-key", "two.energy", "--chunk-size", 7]
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes((tmp_path / "one.h5").read_bytes())
    with h5py.File(damaged, "a") as f:
        del f["labels/teacher.atom_energies"]
    capsys.readouterr()
    for argv, why in (([*plain, "--realign", tmp_path / "one.h5"], "one.h5: made with another --atom-energies, "
                                                                   "--hvp, --per-atom-spread"),
                      ([*second, "--realign", damaged], "damaged.h5: lacks teacher.atom_energies"),
                      ([*second, "--realign", truth], "truth.h5: not a label file of kdframe data teacher-label"),
                      ([*second, "--realign", tmp_path / "none.h5"], "none.h5: not found")):
        assert _label(ani_file, tmp_path / "other.h5", *argv) == 2
        err = capsys.readouterr().err.splitlines()  # the note on ammonia, then the error
        assert [line for line in err if "error" in line] == err[-1:] and err[-1].startswith("kdframe: error: --realign")
        assert why in err[-1], err[-1]
        assert not (tmp_path / "other.h5").exists() and not parts_dir(tmp_path / "other.h5").exists()
