"""Atomic-energy distillation (methods.md §2): the reference convention, a cross-architecture student, the workflow."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from kdframe.cli import main
from kdframe.data.readers import read_dataset
from kdframe.data.reference import fit_reference_energies
from kdframe.evaluation import predict
from kdframe.knowledge import offline_knowledge
from kdframe.knowledge.atomic import AtomicEnergies
from kdframe.plugins import registry
from kdframe.potential import Potential
from kdframe.schedule import Constant
from kdframe.teacher import Teacher
from kdframe.training import LossTerm, Trainer
from kdframe.training.trainer import TrainSettings
from kdframe.workflows.base import Run, load_config

from toy import write_ani_file

HIPNN = {"l_max": 0, "n_interaction_layers": 1, "n_atom_layers": 1, "width": 8, "n_sensitivities": 8}
SMALL = {"toy": {"width": 4}, "hippynn": HIPNN, "torchani": {"hidden": [8]},
         "mace": {"channels": 4, "max_L": 0, "num_interactions": 1, "correlation": 1, "max_ell": 1,
                  "num_radial_basis": 4, "radial_MLP": [8], "r_max": 4.0}}


def _morse(tmp_path, n_conf=12):
    write_ani_file(tmp_path / "morse.h5", n_conf=n_conf)
    data = read_dataset(tmp_path / "morse.h5", {"energy": "morse.energy"})
    return data, torch.as_tensor(fit_reference_energies(data, "energy"))[:, None]


@pytest.mark.parametrize("name", SMALL)
def test_atom_energies_include_the_references_and_sum_to_the_energy(name, tmp_path):
    if name not in registry().architectures:
        pytest.skip(f"plugin {name} not installed")
    data, ref = _morse(tmp_path, n_conf=2)
    model = Potential(registry().architectures[name], SMALL[name], sorted(set(data.species.tolist())),
                      reference_energies=ref)
    batch = data.batch(np.arange(len(data)))
    out = model(batch, forces=False)
    torch.testing.assert_close(batch.sum_per_conf(out["atom_energies"]), out["energy"], rtol=1e-12, atol=1e-6)
    net = model.net(batch).atom_energies.double()
    torch.testing.assert_close(out["atom_energies"] - net, ref.double()[batch.species])


def test_student_of_another_architecture_learns_the_teachers_energies_from_atom_energies_alone(tmp_path):
    """A toy student taught only a HIP-NN teacher's atom energies matches its total energies; untrained it does not."""
    data, ref = _morse(tmp_path, n_conf=16)
    species = sorted(set(data.species.tolist()))
    torch.manual_seed(0)
    teacher = Potential(registry().architectures["hippynn"], HIPNN, species, reference_energies=ref)
    atoms = offline_knowledge(AtomicEnergies("teacher_atoms"), Teacher(teacher, "hipnn"), data, tmp_path / "knowledge",
                              progress=False)
    data = data.with_labels(teacher_atoms=atoms)
    teacher_energy = predict(teacher, data, forces=False).energy
    train, test = np.flatnonzero(np.arange(len(data)) % 4), np.arange(0, len(data), 4)

    def error(model):
        return float(np.sqrt(np.mean((predict(model, data, forces=False).energy - teacher_energy)[test] ** 2)))

    torch.manual_seed(1)
    student = Potential(registry().architectures["toy"], {"width": 16}, species, reference_energies=ref)
    untrained = error(student)
    settings = TrainSettings(batch_size=8, max_epochs=60, lr=5e-3, weight_l2=0, lr_patience=100,
                             termination_patience=100)
    Trainer(student, [LossTerm("atom_energies", "teacher_atoms", Constant(1.0))], data.subset(train),
            data.subset(test), settings, tmp_path / "student", progress=False).fit()
    trained = error(student)
    assert untrained > 1.0, "the control: an untrained student is far from the teacher"
    assert trained < 0.15 and trained < 0.05 * untrained, (trained, untrained)


# --- the workflow --------------------------------------------------------------------------------
def _config(tmp_path, ani_file, **changes):
    raw = {
        "workflow": "atomic", "run_dir": str(tmp_path / "run"), "device": "cpu",
        "data": {"train": {"path": str(ani_file), "energy": "morse.energy", "forces": "morse.forces"},
                 "split": {"fractions": {"train": 0.7, "valid": 0.15, "test": 0.15}}},
        "training": {"batch_size": 8, "max_epochs": 2, "lr": 0.003},
        "teacher": {"train": {"model": {"architecture": "toy", "width": 8}}},
        "students": {"models": [{"architecture": "toy", "width": 2}, {"architecture": "toy", "width": 4}]},
        "born_again": {"weights": {"atom_energies": {1: 200, 2: 0}, "forces": {1: 75, 2: 15}, "energy": {1: 0, 2: 1}}},
        **changes,
    }
    path = tmp_path / "atomic.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_atomic_workflow_sweep(tmp_path, ani_file, capsys):
    assert main(["run", _config(tmp_path, ani_file), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| model | kind | trainable weights | E rmse | F rmse | F mae |" in out
    for row in ("| teacher | teacher |", "| student 1 | student |", "| control 2 | control |", "| born-again | born-again |",
                "| test | student 2 |"):
        assert row in out
    run = tmp_path / "run"
    assert (run / "plots" / "force_error_vs_weights.png").stat().st_size > 0
    assert (run / "plots" / "learning_curves.png").stat().st_size > 0
    assert len(list((run / "knowledge").glob("atomic_energies-*.h5"))) == 1
    assert "force_error_vs_weights.png" in (run / "report.md").read_text()
    # Students learn the teacher's atom energies (a weighted, monitored-after-forces term); controls never see them.
    student, control = ((run / s / "metrics.csv").read_text().splitlines()[0] for s in ("student_1", "control_1"))
    assert student.startswith("epoch,lr,train_loss,valid_rmse[forces:forces],") and "teacher_atom_energies" in student
    assert "teacher_atom_energies" not in control
    teacher = Potential.load(run / "teacher" / "model.pt")
    assert f"| teacher | teacher | {teacher.n_weights()} |" in out and teacher.n_weights() > 0
    frozen = Teacher(teacher, "t").model  # a pretrained teacher is frozen: the table still counts its weights
    assert frozen.n_weights() == 0 and frozen.n_weights(frozen_too=True) == teacher.n_weights(frozen_too=True) > 0
    born_again = Potential.load(run / "born_again" / "model.pt")
    assert born_again.hyperparameters == {"width": 8} and born_again.architecture.name == "toy"


def test_students_learn_teacher_labelled_sources_and_controls_do_not(tmp_path, ani_file, capsys):
    """``students.sources`` and ``born_again.sources`` labelled by the trained teacher (energies, forces, atom energies
    summing to them; once) reach the students and the Born-Again model; the controls train on the run's data alone."""
    from kdframe.data.packed import PackedDataset

    write_ani_file(tmp_path / "sampled.h5", n_conf=10, seed=7)
    sources = {"sampled": {"path": "sampled.h5", "labelled_by": "teachers", "share": 0.5, "limit": 12,
                           "weights": {"energy": 1, "forces": 10, "atom_energies": 10}}}
    born_again = {"weights": {"atom_energies": {1: 200, 2: 0}, "forces": {1: 75, 2: 15}, "energy": {1: 0, 2: 1}},
                  "sources": sources}
    config = _config(tmp_path, ani_file, born_again=born_again,
                     students={"models": [{"architecture": "toy", "width": 2}], "sources": sources})
    assert main(["run", config, "--quiet"]) == 0, capsys.readouterr().err
    run = tmp_path / "run"
    labelled = list((run / "knowledge").glob("teacher_labels-sampled-*.h5"))
    assert len(labelled) == 1
    data = PackedDataset.open(labelled[0], {"e": "teacher.energy", "a": "teacher.atom_energies"})
    batch = data.batch(np.arange(len(data)))
    assert np.allclose(batch.sum_per_conf(batch.labels["a"]).numpy(), batch.labels["e"].numpy(), atol=1e-5)
    teacher = Potential.load(run / "teacher" / "model.pt")
    assert np.allclose(predict(teacher, data, forces=False).energy, batch.labels["e"].numpy(), atol=1e-4)
    # Only the 12 configurations the limit draws are labelled, and a redraw of them holds out the draw's first one
    # (valid_fraction 0.05 of 12), as the whole file with the limit would.
    whole = read_dataset(tmp_path / "sampled.h5", {})
    draw = np.random.default_rng(0).permutation(len(whole))[:12]
    index = {whole.batch([i]).positions.numpy().tobytes(): i for i in range(len(whole))}
    labelled_as = np.array([index[data.batch([i]).positions.numpy().tobytes()] for i in range(len(data))])
    assert sorted(labelled_as) == sorted(draw)
    assert labelled_as[np.random.default_rng(0).permutation(12)[0]] == draw[0]
    student, control, born = ((run / s / "metrics.csv").read_text().splitlines()[0]
                              for s in ("student_1", "control_1", "born_again"))
    assert "valid_rmse[atom_energies:sampled.atom_energies]" in student and "sampled" not in control
    assert "valid_rmse[forces:sampled.forces]" in born
    mtime = labelled[0].stat().st_mtime
    assert main(["run", config, "--quiet"]) == 0 and labelled[0].stat().st_mtime == mtime  # labelled once
    workflow, parsed = load_config(config)  # the whole file's labels, once there, serve a limit too
    source = parsed.students.sources["sampled"]
    with Run(parsed, Path(config), workflow, progress=False) as again:
        whole = parsed.teacher.labelled_sources(again, {"s": source.model_copy(update={"limit": None})}, "t", "teacher")
        limited = parsed.teacher.labelled_sources(again, {"s": source}, "t", "teacher")
    assert limited["s"].path == whole["s"].path and limited["s"].limit == 12
    assert len(PackedDataset.open(whole["s"].path, {})) == len(read_dataset(tmp_path / "sampled.h5", {}))


@pytest.mark.parametrize("where, message", [
    ("shares", "students.sources: a.share 0.6 + b.share 0.5 = 1.1"),
    ("confidence", "students.sources.a.confidence: one teacher has no spread to weight by"),
    ("teacher", "teacher.train.sources.a.labelled_by: in workflow 'atomic' only the sources of students.sources and "
                "born_again.sources are labelled by its teachers"),
])
def test_bad_teacher_labelled_sources_are_refused_before_any_work(tmp_path, ani_file, capsys, where, message):
    write_ani_file(tmp_path / "sampled.h5", n_conf=4, seed=7)
    source = {"path": "sampled.h5", "labelled_by": "teachers", "share": 0.6, "weights": {"energy": 1}}
    students = {"models": [{"architecture": "toy"}], "sources": {"a": source}}
    teacher = {"train": {"model": {"architecture": "toy", "width": 8}}}
    if where == "shares":
        students["sources"]["b"] = {**source, "share": 0.5}
    elif where == "confidence":
        source["confidence"] = {"scale": 0.5}
    else:
        teacher["train"]["sources"], students["sources"] = {"a": {**source, "share": 0.5}}, {}
    assert main(["run", _config(tmp_path, ani_file, students=students, teacher=teacher), "--quiet"]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("changes, message", [
    ({"students": {"models": []}}, "students.models: List should have at least 1 item"),
    ({"students": {"models": [{"architecture": "toy", "widht": 2}]}}, "students.models[0].widht: unknown key"),
    ({"teacher": {"files": ["t.pt"], "train": {"model": {"architecture": "toy"}}}}, "teacher: give exactly one of"),
    ({"teacher": {"file": "t.pt"}}, "teacher: 'file' is now 'files (a list of model files)'"),
    ({"controls": {"weights": {"atom_energies": 1}}}, "controls.weights.atom_energies: unknown loss term"),
])
def test_bad_atomic_config_names_the_yaml_path(tmp_path, ani_file, capsys, changes, message):
    assert main(["run", _config(tmp_path, ani_file, **changes), "--quiet"]) == 2
    assert message in capsys.readouterr().err
