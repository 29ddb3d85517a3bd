"""EKD end to end through the CLI on analytic Morse data with the tiny test architecture."""

import textwrap

import pytest

from kdframe.cli import main

CONFIG = """
workflow: ekd
run_dir: {run_dir}
seed: 0
device: cpu
data:
  train: {{path: {data}, energy: morse.energy, forces: morse.forces}}
  split: {{by: configuration, fractions: {{train: 0.7, valid: 0.15, test: 0.15}}}}
  evaluate:
    - {{name: again, path: {data}, energy: morse.energy}}
training: {{batch_size: 8, max_epochs: 3, lr: 0.003, regularisers: {{smoothness: 0.001}}}}
teachers:
  train:
    count: 2
    model: {{architecture: toy, width: 8}}
student:
  model: {{architecture: toy, width: 4}}
  weights: {{energy: 1, forces: {{1: 10, 2: 5}}}}
generations: {generations}
students_per_generation: 2
"""


def _write(tmp_path, ani_file, generations=1):
    path = tmp_path / "ekd.yaml"
    path.write_text(textwrap.dedent(CONFIG.format(run_dir=tmp_path / "run", data=ani_file, generations=generations)))
    return path


def test_ekd_run_prints_the_table_and_writes_the_report(tmp_path, ani_file, capsys):
    config = _write(tmp_path, ani_file)
    assert main(["run", str(config), "--quiet"]) == 0
    out = capsys.readouterr().out
    for row in ("| test | teacher 1 |", "| test | teacher ensemble |", "| test | student |", "| test | control |",
                "| again | student |"):
        assert row in out
    run = tmp_path / "run"
    assert (run / "report.md").is_file() and list((run / "plots").glob("parity_test_E.png"))
    assert len(list((run / "knowledge").glob("ensemble_forces-*.h5"))) == 1
    # Running again reuses every finished stage (no training, same table).
    mtime = (run / "student" / "model.pt").stat().st_mtime
    assert main(["run", str(config), "--quiet"]) == 0
    assert (run / "student" / "model.pt").stat().st_mtime == mtime
    assert capsys.readouterr().out == out


def test_second_generation(tmp_path, ani_file, capsys):
    assert main(["run", str(_write(tmp_path, ani_file, generations=2)), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| test | student g1 #2 |" in out and "| test | student g2 |" in out
    assert len(list((tmp_path / "run" / "knowledge").glob("*.h5"))) == 2


def test_changed_settings_never_reuse_a_stage(tmp_path, ani_file, capsys):
    config = _write(tmp_path, ani_file)
    assert main(["train", str(config), "--quiet"]) == 0
    config.write_text(config.read_text().replace("lr: 0.003", "lr: 0.002"))
    assert main(["train", str(config), "--quiet"]) == 2
    assert "teacher_1: this stage was made with other settings (changed: training)" in capsys.readouterr().err


def test_evaluate_command(tmp_path, ani_file, capsys):
    config = _write(tmp_path, ani_file)
    assert main(["train", str(config), "--quiet"]) == 0
    model = tmp_path / "run" / "teacher_1" / "model.pt"
    assert main(["evaluate", "--model", str(model), "--data", str(ani_file), "--energy-key", "morse.energy",
                 "--forces-key", "morse.forces"]) == 0
    out = capsys.readouterr().out
    assert "| morse.h5 | model.pt |" in out
    assert (tmp_path / "run" / "teacher_1" / "evaluation-morse.md").is_file()


@pytest.fixture(autouse=True)
def _no_cuda(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def test_ekd_with_hippynn_teachers_and_student(tmp_path, ani_file, capsys):
    """The real plugin end to end: hippynn's integer lookup tables, kernels and regulariser in the core loop."""
    text = _write(tmp_path, ani_file).read_text()
    hipnn = "{architecture: hippynn, l_max: 0, n_interaction_layers: 1, n_atom_layers: 1, width: 8, n_sensitivities: 8}"
    text = (text.replace("{architecture: toy, width: 8}", hipnn).replace("{architecture: toy, width: 4}", hipnn)
            .replace("max_epochs: 3", "max_epochs: 2").replace("smoothness: 0.001", "hierarchicality: 0.01"))
    (tmp_path / "hip.yaml").write_text(text)
    assert main(["run", str(tmp_path / "hip.yaml"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| test | student |" in out and "| again | control |" in out


@pytest.mark.parametrize("configurations", ["labelled", "all"])
def test_student_configurations(tmp_path, monkeypatch, configurations):
    """By default the student learns on the configurations with a true energy (those of the teachers and the
    control, methods.md §1); ``all`` adds those without one, taught by the teachers' forces alone."""
    from kdframe.workflows.base import Run
    from toy import write_ani_file

    data = tmp_path / "gaps.h5"
    write_ani_file(data, n_conf=20, missing_every=3)  # 7 of every molecule's 20 energies missing
    text = CONFIG.format(run_dir=tmp_path / "run", data=data, generations=1).replace("max_epochs: 3", "max_epochs: 1")
    text = text.replace("\ngenerations:", f"\n  configurations: {configurations}\ngenerations:")
    (tmp_path / "ekd.yaml").write_text(textwrap.dedent(text))
    sizes, fit = {}, Run.fit

    def recording(self, stage, student, dataset, seed, **kwargs):
        model = fit(self, stage, student, dataset, seed, **kwargs)
        train_idx = kwargs.get("train_idx", self.splits["train"])
        valid_idx = kwargs.get("valid_idx", self.splits["valid"])
        with_energy = dataset.labelled(["energy"])
        sizes[stage] = (len(train_idx), int(with_energy[train_idx].sum()), len(valid_idx), int(with_energy[valid_idx].sum()))
        return model

    monkeypatch.setattr(Run, "fit", recording)
    assert main(["run", str(tmp_path / "ekd.yaml"), "--quiet"]) == 0
    control = sizes["control"]  # the whole splits (run.fit drops configurations without energies)
    assert 0 < control[1] < control[0] and 0 < control[3] < control[2]
    labelled_only = (control[1], control[1], control[3], control[3])
    assert sizes["student"] == (labelled_only if configurations == "labelled" else control)
