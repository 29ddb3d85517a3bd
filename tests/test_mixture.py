"""Training on several datasets at once: per-batch shares, NaN for a label a part lacks, unique indices."""

from pathlib import Path

import numpy as np
import pytest
import torch

from kdframe.data.mixture import ID_SHIFT, Mixture, _apportion
from kdframe.data.readers import read_dataset

from toy import MOLECULES, write_ani_file


def _parts(tmp_path):
    write_ani_file(tmp_path / "truth.h5", n_conf=6)
    write_ani_file(tmp_path / "sampled.h5", n_conf=30, seed=1)
    truth = read_dataset(tmp_path / "truth.h5", {"energy": "morse.energy"})
    sampled = read_dataset(tmp_path / "sampled.h5", {"s.energy": "morse.energy", "s.forces": "morse.forces"})
    return truth, sampled


def test_every_shuffled_batch_draws_its_shares(tmp_path):
    truth, sampled = _parts(tmp_path)  # 24 and 120 configurations
    mixture = Mixture([truth, sampled], [0.25, 0.75])
    batches = list(mixture.batch_indices(16, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert len(batches) == 9  # (24 + 120) / 16
    for confs in batches:
        assert (confs < 24).sum() == 4 and (confs >= 24).sum() == 12
    seen = np.concatenate(batches)
    assert set(seen[seen < 24]) == set(range(24))  # the small part is cycled: every configuration, reshuffled
    again = list(mixture.batch_indices(16, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    in_order = np.concatenate(list(mixture.batch_indices(16)))  # validation: every configuration once, in order
    assert np.array_equal(in_order, np.arange(144))


def test_a_label_a_part_lacks_is_nan_and_indices_stay_unique(tmp_path):
    truth, sampled = _parts(tmp_path)
    mixture = Mixture([truth, sampled], [0.5, 0.5])
    batch = mixture.batch(np.array([0, 30, 1]), ["energy", "s.energy", "s.forces"])
    assert batch.n_conf == 3 and batch.conf_index.max() == 2
    energy, sampled_energy = batch.labels["energy"].numpy(), batch.labels["s.energy"].numpy()
    assert np.isfinite(energy[:2]).all() and np.isnan(energy[2])  # grouped by part: truth's 0 and 1, then 30
    assert np.isnan(sampled_energy[:2]).all() and np.isfinite(sampled_energy[2])
    n_truth_atoms = int(truth.n_atoms[[0, 1]].sum())
    assert batch.labels["s.forces"].shape == (batch.n_atoms, 3)
    assert torch.isnan(batch.labels["s.forces"][:n_truth_atoms]).all()
    assert torch.isfinite(batch.labels["s.forces"][n_truth_atoms:]).all()
    assert batch.index.tolist() == [0, 1, (1 << ID_SHIFT) + 6]
    assert mixture.labelled(["energy"]).sum() == 24 and mixture.labelled(["s.forces"]).sum() == 120
    assert len(mixture.subset(np.array([1, 2, 40]))) == 3


def test_an_empty_part_with_a_share_is_refused(tmp_path):
    truth, sampled = _parts(tmp_path)
    with pytest.raises(ValueError, match="has no configurations"):
        Mixture([truth, sampled.subset(np.zeros(0, dtype=np.int64))], [0.5, 0.5])


def test_apportion_keeps_every_positive_share():
    assert _apportion(16, [0.25, 0.75]) == [4, 12]
    assert sum(_apportion(7, [0.5, 0.3, 0.2])) == 7
    assert _apportion(4, [0.99, 0.01])[1] == 1


def test_a_toy_model_learns_a_sources_forces_through_the_mixture(tmp_path):
    """Trained on a mixture, the sampled part's forces are learnt when (and only when) their term has weight."""
    from kdframe.data.reference import fit_reference_energies
    from kdframe.plugins import registry
    from kdframe.potential import Potential
    from kdframe.schedule import Constant
    from kdframe.training import LossTerm, Trainer
    from kdframe.training.trainer import TrainSettings

    truth, sampled = _parts(tmp_path)
    species = sorted({int(z) for zs, _ in MOLECULES.values() for z in zs})
    reference = torch.as_tensor(fit_reference_energies(truth, "energy")[:, None])
    train = Mixture([truth.subset(np.arange(20)), sampled.subset(np.arange(100))], [0.3, 0.7])
    valid = Mixture([truth.subset(np.arange(20, 24)), sampled.subset(np.arange(100, 120))])
    errors = {}
    for force_weight in (0.0, 10.0):
        torch.manual_seed(0)
        model = Potential(registry().architectures["toy"], {"width": 8}, species, reference_energies=reference)
        terms = [LossTerm("energy", "energy", Constant(1.0)), LossTerm("forces", "s.forces", Constant(force_weight))]
        trainer = Trainer(model, terms, train, valid, TrainSettings(max_epochs=10, batch_size=8, lr=0.01),
                          tmp_path / f"stage{force_weight}", progress=False)
        trainer.fit()
        errors[force_weight] = trainer.validate()["valid_rmse[forces:s.forces]"]
    assert np.isfinite(list(errors.values())).all()
    assert errors[10.0] < 0.9 * errors[0.0], errors  # seeded and single-threaded: deterministic


def _ekd_config(tmp_path, ani_file, sources: dict, training: dict | None = None, **student) -> str:
    import yaml

    raw = {"workflow": "ekd", "run_dir": str(tmp_path / "run"), "device": "cpu",
           "data": {"train": {"path": str(ani_file), "energy": "morse.energy"}},
           "training": training or {"batch_size": 8, "max_epochs": 2},
           "teachers": {"train": {"count": 2, "model": {"architecture": "toy", "width": 4}}},
           "student": {"model": {"architecture": "toy", "width": 4}, "sources": sources, **student}}
    path = tmp_path / "ekd.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_an_ekd_student_trains_on_a_teacher_labelled_source_streamed_from_a_packed_file(tmp_path, ani_file, capsys):
    from kdframe.cli import main
    from kdframe.data.packed import pack_ani

    write_ani_file(tmp_path / "sampled.h5", n_conf=20, seed=5)
    pack_ani(tmp_path / "sampled.h5", tmp_path / "sampled_packed.h5")
    sources = {"sampled": {"path": "sampled_packed.h5", "energy": "morse.energy", "forces": "morse.forces",
                           "weights": {"energy": 1, "forces": 10}, "share": 0.5}}
    assert main(["run", _ekd_config(tmp_path, ani_file, sources), "--quiet"]) == 0, capsys.readouterr().err
    student = (tmp_path / "run" / "student" / "metrics.csv").read_text().splitlines()[0]
    control = (tmp_path / "run" / "control" / "metrics.csv").read_text().splitlines()[0]
    assert "valid_rmse[forces:sampled.forces]" in student and "valid_rmse[energy:sampled.energy]" in student
    assert "sampled" not in control  # the control learns the run's energies alone


def test_the_student_can_monitor_a_sources_validation_error(tmp_path, ani_file, capsys):
    """``student.monitor: SOURCE.QUANTITY``: that validation RMSE, not the run's energies', picks the kept weights,
    lowers the learning rate and stops training (recorded in the stage); the control keeps the default."""
    import json

    from kdframe.cli import main

    write_ani_file(tmp_path / "sampled.h5", n_conf=20, seed=5)
    sources = {"sampled": {"path": "sampled.h5", "energy": "morse.energy", "forces": "morse.forces",
                           "weights": {"energy": 1, "forces": 10}, "share": 0.5, "valid_fraction": 0.25}}
    training = {"batch_size": 8, "max_epochs": 8, "lr": 0.05, "termination_patience": 2}
    config = _ekd_config(tmp_path, ani_file, sources, training, monitor="sampled.forces")
    assert main(["run", config, "--quiet"]) == 0, capsys.readouterr().err
    stage = tmp_path / "run" / "student"
    header, *rows = [line.split(",") for line in (stage / "metrics.csv").read_text().splitlines()]
    column = [float(row[header.index("valid_rmse[forces:sampled.forces]")]) for row in rows]
    energies = [float(row[header.index("valid_rmse[energy:energy]")]) for row in rows]
    best = torch.load(stage / "checkpoint.pt", weights_only=False)["best_metric"]
    assert best == min(column) and best not in energies
    assert json.loads((stage / "stage.json").read_text())["monitor"] == "forces:sampled.forces"
    assert "monitor" not in json.loads((tmp_path / "run" / "control" / "stage.json").read_text())


def test_bad_sources_are_refused_before_any_work(tmp_path, ani_file, capsys):
    from kdframe.cli import main

    write_ani_file(tmp_path / "sampled.h5", n_conf=4)
    cases = [({"s": {"path": "nowhere.h5", "energy": "morse.energy", "weights": {"energy": 1}, "share": 0.5}},
              "student.sources.s.path: file not found: nowhere.h5"),
             ({"s": {"path": "sampled.h5", "energy": "morse.energy", "share": 0.5}},
              "student.sources.s.weights.forces: this source has no forces"),
             ({"a": {"path": "sampled.h5", "energy": "morse.energy", "weights": {"energy": 1}, "share": 0.6},
               "b": {"path": "sampled.h5", "energy": "morse.energy", "weights": {"energy": 1}, "share": 0.5}},
              "student.sources: a.share 0.6 + b.share 0.5 = 1.1: leave some of every batch to the run's data"),
             ({"s": {"path": "sampled.h5", "energy": "morse.energy", "weights": {"energy": 1}, "share": 0.5,
                     "limit": 99}}, "student.sources.s.limit: 99 is more than the 16 configurations of sampled.h5")]
    for sources, message in cases:
        assert main(["run", _ekd_config(tmp_path, ani_file, sources), "--quiet"]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("monitor, valid_fraction, message", [
    ("s.forces", 0.05, "student.monitor: 's.forces' is not a loss term of this block (valid: energy, forces, "
                       "s.energy)"),
    ("stress", 0.05, "student.monitor: 'stress' is not a loss term of this block (valid: energy, forces, s.energy)"),
    ("s.energy", 0, "student.monitor: 's.energy': that source holds no configurations out for validation"),
])
def test_a_monitor_that_names_no_validated_term_is_refused(tmp_path, ani_file, capsys, monitor, valid_fraction,
                                                           message):
    from kdframe.cli import main

    write_ani_file(tmp_path / "sampled.h5", n_conf=4)
    sources = {"s": {"path": "sampled.h5", "energy": "morse.energy", "weights": {"energy": 1}, "share": 0.5,
                     "valid_fraction": valid_fraction}}
    assert main(["run", _ekd_config(tmp_path, ani_file, sources, monitor=monitor), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_source_limit_takes_nested_random_subsets(tmp_path, ani_file):
    """``limit: N`` trains on N configurations of the file drawn by the run's seed; a smaller limit takes the
    first of the same draw (learning curves compare nested sets)."""
    from kdframe.workflows.base import Run, load_config

    write_ani_file(tmp_path / "sampled.h5", n_conf=100, seed=3)  # 400 configurations (4 molecules)
    chosen = {}
    for limit in (12, 30, None):  # 5 % of 400 held out would be more than 12
        sources = {"s": {"path": "sampled.h5", "energy": "morse.energy", "weights": {"energy": 1}, "share": 0.5,
                         "limit": limit}}
        path = _ekd_config(tmp_path, ani_file, sources)
        workflow, config = load_config(path)
        run = Run(config, Path(path), workflow, progress=False)
        train, valid = run._with_sources(config.student.sources, run.data.subset(run.splits["train"]),
                                         run.data.subset(run.splits["valid"]))
        part_train, part_valid = train.parts[1], valid.parts[1]
        assert len(part_train) + len(part_valid) == (limit or 400) and len(part_valid) == round(0.05 * (limit or 400))
        chosen[limit] = {tuple(part_train.positions[part_train.atom_ptr[i]:part_train.atom_ptr[i + 1]].ravel().round(6))
                         for i in range(len(part_train))}
    assert len(chosen[12] - chosen[30]) <= 1 and len(chosen[30] - chosen[None]) <= 20  # nested, up to the valid cut


def test_the_runs_aligned_teachers_label_an_unlabelled_source(tmp_path, ani_file, monkeypatch, capsys):
    """``labelled_by: teachers``: the pretrained ensemble, aligned to the run's energies, labels the file once
    (into run_dir/knowledge); the student trains on those labels, which sit on the run's energy scale."""
    import h5py

    from kdframe.cli import main
    from kdframe.data.packed import PackedDataset
    from kdframe.plugins import registry
    from kdframe.potential import Ensemble, Potential

    def shifted_zoo() -> Ensemble:  # another level of theory: 50 eV per atom off the run's energies
        torch.manual_seed(1)
        members = [Potential(registry().architectures["toy"], {"width": 4}, [1, 6, 7, 8]) for _ in range(2)]
        with torch.no_grad():
            for m in members:
                m.reference_energies += 50.0
        return Ensemble(members)

    monkeypatch.setitem(registry().pretrained, "toyzoo", shifted_zoo)
    write_ani_file(tmp_path / "sampled.h5", n_conf=10, seed=7)
    with h5py.File(tmp_path / "sampled.h5", "a") as f:  # unlabelled configurations, as data generate writes
        for group in f.values():
            del group["morse.energy"], group["morse.forces"]
    config = _ekd_config(tmp_path, ani_file, {"sampled": {"path": "sampled.h5", "labelled_by": "teachers",
                                                          "weights": {"energy": 1, "forces": 10}, "share": 0.5}})
    raw = __import__("yaml").safe_load(open(config))
    raw["teachers"] = {"pretrained": "toyzoo"}
    open(config, "w").write(__import__("yaml").safe_dump(raw))
    assert main(["run", config, "--quiet"]) == 0, capsys.readouterr().err
    labelled = list((tmp_path / "run" / "knowledge").glob("teacher_labels-sampled-*.h5"))
    assert len(labelled) == 1
    energies = PackedDataset.open(labelled[0], {"e": "teacher.energy"}).labels["e"]
    truth = read_dataset(ani_file, {"energy": "morse.energy"}).labels["energy"]
    assert abs(np.mean(energies) - np.mean(truth)) < 5.0  # aligned: not 50 eV x atoms away
    assert "valid_rmse[forces:sampled.forces]" in (tmp_path / "run" / "student" / "metrics.csv").read_text()
    mtime = labelled[0].stat().st_mtime
    assert main(["run", config, "--quiet"]) == 0 and labelled[0].stat().st_mtime == mtime  # labelled once


def test_another_seeds_labels_copied_into_knowledge_are_realigned_not_relabelled(tmp_path, ani_file, monkeypatch,
                                                                                  capsys):
    """Another seed aligns the pretrained teachers on another split; its label file, copied into this run's
    run_dir/knowledge, is shifted to this run's offsets: the same file, name and values, as labelling afresh."""
    import shutil

    import h5py
    import yaml

    from kdframe.cli import main
    from kdframe.data.packed import PackedDataset
    from kdframe.plugins import registry
    from kdframe.potential import Ensemble, Potential

    def zoo() -> Ensemble:
        torch.manual_seed(1)
        return Ensemble([Potential(registry().architectures["toy"], {"width": 4}, [1, 6, 7, 8]) for _ in range(2)])

    monkeypatch.setitem(registry().pretrained, "toyzoo", zoo)
    write_ani_file(tmp_path / "sampled.h5", n_conf=10, seed=7)
    config = _ekd_config(tmp_path, ani_file, {"sampled": {"path": "sampled.h5", "labelled_by": "teachers",
                                                          "weights": {"energy": 1, "forces": 10}, "share": 0.5}})
    raw = yaml.safe_load(open(config))
    raw["teachers"] = {"pretrained": "toyzoo"}
    files = {}
    for run, seed in (("seed0", 0), ("copied", 1), ("fresh", 1)):
        raw.update(run_dir=str(tmp_path / run), seed=seed)
        open(config, "w").write(yaml.safe_dump(raw))
        with monkeypatch.context() as patch:
            if run == "copied":
                (tmp_path / run / "knowledge").mkdir(parents=True)
                shutil.copy(files["seed0"], tmp_path / run / "knowledge")
                patch.setattr("kdframe.teacher_labelling.label_chunk", None)  # its teachers must not run
            assert main(["label", config, "--quiet"]) == 0, capsys.readouterr().err
        made = set((tmp_path / run / "knowledge").glob("teacher_labels-sampled-*.h5")) - {
            tmp_path / run / "knowledge" / files.get("seed0", Path("-")).name}
        assert len(made) == 1
        files[run] = made.pop()
    assert files["copied"].name == files["fresh"].name != files["seed0"].name
    keys = {"e": "teacher.energy", "f": "teacher.forces"}
    seed0, copied, fresh = (PackedDataset.open(files[r], keys) for r in ("seed0", "copied", "fresh"))
    assert np.abs(seed0.labels["e"] - fresh.labels["e"]).max() > 1e-6  # the seeds' alignments differ
    everything = np.arange(len(fresh))
    for key in keys:
        assert np.allclose(copied.batch(everything).labels[key], fresh.batch(everything).labels[key], rtol=0,
                           atol=1e-9)
    with h5py.File(files["copied"], "r") as f:
        assert f.attrs["teacher.realigned_from"] == str(tmp_path / "copied" / "knowledge" / files["seed0"].name)


def test_a_workflow_without_teachers_refuses_teacher_labelled_sources(tmp_path, ani_file, capsys):
    import yaml

    from kdframe.cli import main

    write_ani_file(tmp_path / "sampled.h5", n_conf=4)
    raw = {"workflow": "train", "run_dir": str(tmp_path / "run"), "data": {"train": {"path": str(ani_file),
                                                                                    "energy": "morse.energy"}},
           "potential": {"model": {"architecture": "toy"}, "sources": {"s": {"path": "sampled.h5",
                                                                             "labelled_by": "teachers",
                                                                             "weights": {"energy": 1}, "share": 0.5}}}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(raw))
    assert main(["run", str(tmp_path / "t.yaml"), "--quiet"]) == 2
    assert "potential.sources.s.labelled_by: workflow 'train' has no teachers" in capsys.readouterr().err


def test_teacher_atom_energies_of_a_source_are_labelled_and_trained_on(tmp_path, ani_file, capsys):
    """``weights.atom_energies`` on a ``labelled_by: teachers`` source: the teachers also label per-atom energies
    (summing to their energies), in a file of their own, and the student learns them as a loss term."""
    import yaml

    from kdframe.cli import main
    from kdframe.data.packed import PackedDataset

    write_ani_file(tmp_path / "sampled.h5", n_conf=10, seed=7)
    config = _ekd_config(tmp_path, ani_file, {"sampled": {"path": "sampled.h5", "labelled_by": "teachers",
                                                          "weights": {"energy": 1, "forces": 1, "atom_energies": 5},
                                                          "share": 0.5}})
    assert main(["run", config, "--quiet"]) == 0, capsys.readouterr().err
    labelled = list((tmp_path / "run" / "knowledge").glob("teacher_labels-sampled-*.h5"))
    assert len(labelled) == 1
    data = PackedDataset.open(labelled[0], {"e": "teacher.energy", "a": "teacher.atom_energies"})
    batch = data.batch(np.arange(len(data)))
    assert batch.labels["a"].shape == (batch.n_atoms,) and np.isfinite(batch.labels["a"].numpy()).all()
    assert np.allclose(batch.sum_per_conf(batch.labels["a"]).numpy(), batch.labels["e"].numpy(), rtol=0, atol=1e-5)
    assert "valid_rmse[atom_energies:sampled.atom_energies]" in (tmp_path / "run" / "student" / "metrics.csv").read_text()

    raw = yaml.safe_load(open(config))  # a file source must name the key of its atom energies
    raw["student"]["sources"]["sampled"] = {"path": "sampled.h5", "energy": "morse.energy",
                                            "weights": {"energy": 1, "atom_energies": 1}, "share": 0.5}
    open(config, "w").write(yaml.safe_dump(raw))
    assert main(["run", config, "--quiet"]) == 2
    assert ("student.sources.sampled.weights.atom_energies: this source has no atom_energies"
            in capsys.readouterr().err)


@pytest.mark.parametrize("key", ["morse.energy", "morse.forces"])
def test_atom_energies_of_a_source_must_be_one_value_per_atom(tmp_path, ani_file, capsys, key):
    from kdframe.cli import main

    write_ani_file(tmp_path / "sampled.h5", n_conf=4)
    config = _ekd_config(tmp_path, ani_file, {"s": {"path": "sampled.h5", "energy": "morse.energy", "atom_energies": key,
                                                    "weights": {"energy": 1, "atom_energies": 1}, "share": 0.5}})
    assert main(["run", config, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"student.sources.s.atom_energies: key {key!r} of sampled.h5 does not hold one value per atom" in err
    assert not (tmp_path / "run" / "teachers").exists()  # refused before any work


def test_a_source_without_atom_energies_records_as_before(tmp_path):
    """Stage records of runs made before ``atom_energies`` existed still match (the unset key is left out)."""
    from kdframe.student import Source

    (tmp_path / "s.h5").write_bytes(b"")
    source = Source.model_validate({"path": "s.h5", "energy": "e", "share": 0.5, "weights": {"energy": 1}},
                                   context={"config_dir": tmp_path})
    assert "atom_energies" not in source.model_dump()
    assert source.model_copy(update={"atom_energies": "a"}).model_dump()["atom_energies"] == "a"
