"""One teacher block for every workflow: trained here, model files of another architecture, a pretrained ensemble."""

import pytest
import torch
import yaml

from kdframe.cli import main
from kdframe.plugins import registry
from kdframe.potential import Ensemble, Potential

HIPNN = {"architecture": "hippynn", "l_max": 0, "n_interaction_layers": 1, "n_atom_layers": 1, "width": 4,
         "n_sensitivities": 4, "dist_soft_max": 4.0, "dist_hard_max": 5.0}
SPECIES = [1, 6, 7, 8]


def _config(tmp_path, ani_file, workflow: str, teacher: dict) -> str:
    """A tiny run of ``workflow`` whose teacher block is ``teacher``."""
    raw = {"workflow": workflow, "run_dir": str(tmp_path / "run"), "device": "cpu",
           "data": {"train": {"path": str(ani_file), "energy": "morse.energy", "forces": "morse.forces"},
                    "split": {"fractions": {"train": 0.7, "valid": 0.15, "test": 0.15}}},
           "training": {"batch_size": 16, "max_epochs": 1}}
    toy = {"architecture": "toy", "width": 4}
    if workflow == "ekd":
        raw.update(teachers=teacher, student={"model": toy})
    elif workflow == "atomic":
        raw.update(teacher=teacher, students={"models": [toy]}, born_again={"enabled": False})
    else:
        raw.update(fidelities={"dft": {"energy": "morse.energy"}, "taught": {"energy": "morse.energy",
                                                                            "teacher": teacher}},
                   evaluate_head="dft", potential={"model": toy})
    path = tmp_path / f"{workflow}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _members(species=SPECIES, spec=None) -> list[Potential]:
    spec = dict(spec or {"architecture": "toy", "width": 4})
    arch = registry().architectures[spec.pop("architecture")]
    torch.manual_seed(1)
    return [Potential(arch, spec, species) for _ in range(2)]


KNOWLEDGE = {"ekd": "ensemble_forces-teacher_forces-*.h5", "atomic": "atomic_energies-*.h5",
             "multifidelity": "ensemble_forces-taught.forces-*.h5"}


@pytest.mark.parametrize("workflow", ["ekd", "atomic", "multifidelity"])
@pytest.mark.parametrize("source", ["pretrained", "files of another architecture", "train"])
def test_any_teacher_teaches_every_workflow(tmp_path, ani_file, monkeypatch, capsys, workflow, source):
    if source == "pretrained":
        monkeypatch.setitem(registry().pretrained, "toyzoo", lambda: Ensemble(_members()))
        teacher = {"pretrained": "toyzoo"}
    elif source == "train":
        teacher = {"train": {"count": 2, "model": {"architecture": "toy", "width": 4}}}
    else:
        files = []
        for i, member in enumerate(_members(spec=HIPNN)):
            member.save(tmp_path / f"hipnn_{i}.pt")
            files.append(f"hipnn_{i}.pt")  # relative to the YAML file
        teacher = {"files": files}
    assert main(["run", _config(tmp_path, ani_file, workflow, teacher), "--quiet"]) == 0, capsys.readouterr().err
    assert len(list((tmp_path / "run" / "knowledge").glob(KNOWLEDGE[workflow]))) == 1
    trained = sorted(p.parent.name for p in (tmp_path / "run").glob("teacher*/model.pt"))
    stage = {"ekd": "teacher", "atomic": "teacher", "multifidelity": "teacher_taught"}[workflow]
    assert trained == ([f"{stage}_1", f"{stage}_2"] if source == "train" else [])


@pytest.mark.parametrize("workflow, where", [("ekd", "teachers"), ("atomic", "teacher"),
                                             ("multifidelity", "fidelities.taught.teacher")])
def test_a_teacher_missing_an_element_is_one_error_in_every_workflow(tmp_path, ani_file, monkeypatch, capsys,
                                                                    workflow, where):
    monkeypatch.setitem(registry().pretrained, "toyzoo", lambda: Ensemble(_members(species=[1, 6, 8])))
    assert main(["run", _config(tmp_path, ani_file, workflow, {"pretrained": "toyzoo"}), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kdframe: error: {where}: pretrained toyzoo knows elements [1, 6, 8], but the data "
                          "also has [7]"), err
    assert not list((tmp_path / "run").glob("*/stage.json"))


def test_outside_teachers_are_aligned_to_the_data_unless_told_not_to(tmp_path, ani_file, monkeypatch, capsys):
    def another_level_of_theory() -> Ensemble:
        members = _members()
        with torch.no_grad():
            for member in members:
                member.reference_energies += 50.0  # eV per atom: other atomic energies
        return Ensemble(members)

    monkeypatch.setitem(registry().pretrained, "toyzoo", another_level_of_theory)
    rows = {}
    for align in (True, False):
        (tmp_path / str(align)).mkdir()
        config = _config(tmp_path / str(align), ani_file, "ekd", {"pretrained": "toyzoo", "align_energies": align})
        assert main(["train", config, "--quiet"]) == 0
        line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("| test | teacher ensemble |"))
        rows[align] = float(line.split("|")[3])  # E RMSE
    assert rows[True] < rows[False] / 10, rows


@pytest.mark.parametrize("workflow, teacher, message", [
    ("ekd", {"count": 2, "model": {"architecture": "toy"}}, "teachers: 'count' is now 'train.count'"),
    ("atomic", {"file": "t.pt"}, "teacher: 'file' is now 'files (a list of model files)'"),
    ("ekd", {"files": ["nowhere.pt"]}, "teachers.files[0]: model file not found: nowhere.pt"),
    ("ekd", {"pretrained": "ani9"}, "teachers.pretrained: unknown pretrained 'ani9' (valid: "),
    ("atomic", {"train": {"model": {"architecture": "toy"}, "weights": {"atom_energies": 1}}},
     "teacher.train.weights.atom_energies: unknown loss term (valid: energy, forces)"),
])
def test_bad_teacher_blocks_name_the_new_key(tmp_path, ani_file, capsys, workflow, teacher, message):
    assert main(["run", _config(tmp_path, ani_file, workflow, teacher), "--quiet"]) == 2
    assert message in capsys.readouterr().err


def test_old_multifidelity_spelling_names_the_new_key(tmp_path, ani_file, capsys):
    config = _config(tmp_path, ani_file, "multifidelity", {"files": ["t.pt"]})
    raw = yaml.safe_load(open(config))
    raw["fidelities"]["taught"] = {"energy": "morse.energy", "teacher_forces": ["t.pt"]}
    open(config, "w").write(yaml.safe_dump(raw))
    assert main(["run", config, "--quiet"]) == 2
    assert "fidelities.taught: 'teacher_forces' is now 'teacher'" in capsys.readouterr().err


@pytest.mark.parametrize("workflow, changes, message", [
    ("ekd", {"training": {"regularisers": {"smoothnes": 0.1}}},
     "training.regularisers.smoothnes: architecture 'toy' has no such regulariser; set teachers.train.training"),
    ("ekd", {"student": {"model": {"architecture": "hippynn"}, "training": {"regularisers": {"smoothness": 1}}}},
     "student.training.regularisers.smoothness: architecture 'hippynn' has no such regulariser (valid: "
     "hierarchicality)"),
    ("atomic", {"students": {"models": [{"architecture": "toy"}], "training": {"regularisers": {"x": 1}}}},
     "students.training.regularisers.x: architecture 'toy' has no such regulariser"),
])
def test_a_regulariser_the_architecture_lacks_is_refused_before_any_work(tmp_path, ani_file, capsys, workflow,
                                                                        changes, message):
    config = _config(tmp_path, ani_file, workflow, {"train": {"model": {"architecture": "toy", "width": 4}}})
    raw = {**yaml.safe_load(open(config)), **changes}
    open(config, "w").write(yaml.safe_dump(raw))
    assert main(["run", config, "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
