"""benchmarks/student_speed.py (untrained students from a YAML model block or a reshaped model file),
benchmarks/student_pareto.py (a run's extensibility errors from its report) and common.command_line."""

import pytest
import torch

from kdframe.plugins import registry
from kdframe.potential import Potential
from repo_scripts import load_script


def test_a_model_block_builds_an_untrained_student_for_the_workloads_elements():
    speed = load_script("benchmarks/student_speed.py")
    student = speed.built("{architecture: toy, width: 8}", [1, 6, 8])
    assert isinstance(student, Potential) and student.species == [1, 6, 8]
    assert student.hyperparameters["width"] == 8
    assert speed.reshaped(student, ["width=4"]).hyperparameters["width"] == 4


@pytest.mark.parametrize("block, message", [("{width: 8}", "YAML model block"),
                                            ("{architecture: nope}", "unknown architecture 'nope'"),
                                            ("{architecture: toy, widht: 8}", "not a valid toy model")])
def test_a_bad_model_block_is_one_clear_error(block, message):
    with pytest.raises(SystemExit, match=message):
        load_script("benchmarks/student_speed.py").built(block, [1, 6, 8])


def test_a_memory_process_loads_only_the_model_it_measures(tmp_path, monkeypatch):
    """The teacher is not loaded beside the student: memory it frees would hide part of the student's peak."""
    speed = load_script("benchmarks/student_speed.py")
    loaded = []
    monkeypatch.setitem(registry().pretrained, "counted", lambda: loaded.append("teacher") or torch.nn.Linear(1, 1))
    args = type("Args", (), {"student": "{architecture: toy}", "reshape": [], "pretrained": "counted",
                             "device": "cpu"})()
    speed.load("student", args, [1, 6])
    assert loaded == []
    speed.load("teacher", args, [1, 6])
    assert loaded == ["teacher"]


REPORT = """# Ensemble knowledge distillation

| set | model | E rmse | E mae | E/atom rmse | dE rmse | dE mae | F rmse | F mae |
|---|---|---|---|---|---|---|---|---|
| test | teacher ensemble | 0.667 | 0.464 | 0.114 | 0.795 | 0.582 | 2.853 | 1.723 |
| test | student | 0.671 | 0.461 | 0.109 | 0.901 | 0.666 | 3.310 | 1.877 |
| extensibility | teacher 1 | 0.680 | 0.531 | 0.055 | 0.862 | 0.678 | 3.131 | 2.172 |
| extensibility | teacher ensemble | 0.373 | 0.280 | 0.029 | 0.490 | 0.375 | 1.802 | 1.243 |
| extensibility | student | 0.535 | 0.415 | 0.043 | 0.699 | 0.535 | 2.005 | 1.395 |
"""


def test_pareto_reads_the_extensibility_rmse_of_student_and_teacher(tmp_path):
    report = tmp_path / "report.md"
    report.write_text(REPORT)
    rows = load_script("benchmarks/student_pareto.py").extensibility_rmse(report)
    assert rows["student"] == {"E": 0.535, "dE": 0.699, "F": 2.005}
    assert rows["teacher ensemble"] == {"E": 0.373, "dE": 0.490, "F": 1.802}


def test_pareto_refuses_a_report_without_the_rows(tmp_path):
    report = tmp_path / "report.md"
    report.write_text(REPORT.replace("| extensibility | student", "| test | student again"))
    with pytest.raises(SystemExit, match="no extensibility rows"):
        load_script("benchmarks/student_pareto.py").extensibility_rmse(report)


def test_result_files_record_a_command_that_can_be_pasted(monkeypatch):
    monkeypatch.setattr("sys.argv", ["benchmarks/student_pareto.py", "--runs", "TorchANI, [64, 48]=runs/x"])
    assert load_script("benchmarks/common.py").command_line() == \
        "python benchmarks/student_pareto.py --runs 'TorchANI, [64, 48]=runs/x'"


def test_a_learning_curve_shares_each_size_among_its_sources_in_proportion():
    """Several sources: a size is split as their sizes in the config are (a source's limit, or its whole file),
    adding up exactly; 0 is the config as it is; one source keeps its old meaning (0: the whole file)."""
    from types import SimpleNamespace

    curve = load_script("benchmarks/learning_curve.py")
    files = {"sampled": 47110, "conformers": 18024, "thermal": 18750}
    sources = {"sampled": SimpleNamespace(limit=20000), "conformers": SimpleNamespace(limit=None),
               "thermal": SimpleNamespace(limit=None)}
    run = SimpleNamespace(config=SimpleNamespace(student=SimpleNamespace(sources=sources)),
                          _source=lambda name, source, where: range(files[name]))
    shares = curve.limits(run, list(files), 5000)
    assert sum(shares.values()) == 5000
    assert shares == {"sampled": 1762, "conformers": 1587, "thermal": 1651}  # 1761.4 : 1587.3 : 1651.3
    assert curve.limits(run, list(files), 0) == {"sampled": 20000, "conformers": None, "thermal": None}
    assert curve.limits(None, ["sampled"], 0) == {"sampled": None}
    with pytest.raises(SystemExit, match="more than the 56774 configurations"):
        curve.limits(run, list(files), 60000)
    with pytest.raises(SystemExit, match="each needs at least 2"):
        curve.limits(run, list(files), 5)
