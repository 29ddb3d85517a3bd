"""On-policy exploration: frame selection, failures, and resumable rounds of an EKD run (tiny systems, few steps)."""

import json
import re

import numpy as np
import pytest
import torch
import yaml
from ase import Atoms

from kdframe.exploration import Dynamics, Frame, Selection, Trajectory, Watcher, run_trajectory, select_frames
from kdframe.io import file_sha256
from kdframe.plugins import registry
from kdframe.potential import Ensemble, Potential

from toy import MOLECULES


def _frame(trajectory: int, index: int, deviation: float, spread: float = 0.1) -> Frame:
    return Frame(trajectory, index, float(index), None, 0.0, np.zeros((1, 3)), spread, deviation)


def test_selection_takes_the_largest_deviations_spaced_along_each_trajectory():
    frames = [_frame(0, i, d) for i, d in enumerate([0.1, 0.9, 0.8, 0.2, 0.7])] + [_frame(1, 0, 0.5),
                                                                                  _frame(1, 1, 5.0, spread=3.0)]
    trajectories = [Trajectory("a", 300, 0, frames[:5]), Trajectory("b", 300, 1, frames[5:])]
    chosen = select_frames(trajectories, Selection(top_k=3, min_spacing=2), max_spread=1.0)
    # 5.0 is where the teachers disagree beyond trust; 0.8 sits next to 0.9; then 0.7 and 0.5
    assert [(f.trajectory, f.index) for f in chosen] == [(0, 1), (0, 4), (1, 0)]
    by_spread = select_frames(trajectories, Selection(rank_by="spread", top_k=1, min_spacing=0), max_spread=10.0)
    assert [(f.trajectory, f.index) for f in by_spread] == [(1, 1)]
    assert select_frames(trajectories, Selection(deviation_above=2.0), max_spread=1.0) == []


def _toy(seed: int) -> Potential:
    torch.manual_seed(seed)
    return Potential(registry().architectures["toy"], {"width": 4}, [1, 6, 7, 8])


def _methanol() -> Atoms:
    numbers, positions = MOLECULES["methanol"]
    return Atoms(numbers=numbers, positions=positions)


@pytest.mark.parametrize("dynamics, failure, frames", [
    (Dynamics(steps=20, every=5, min_distance=5.0), "close atoms", 1),  # at once; the start is kept
    (Dynamics(steps=20, every=5, max_spread=1e-9), "teacher disagreement", 1),  # at the first kept frame
    (Dynamics(steps=20, every=5, ensemble="nve"), None, 4),
])
def test_a_failure_stops_a_trajectory_and_keeps_its_frames(dynamics, failure, frames):
    watcher = Watcher(Ensemble([_toy(1), _toy(2)]))
    try:
        result = run_trajectory(_toy(0), watcher, _methanol(), "methanol", 300.0, 0, 0, dynamics)
    finally:
        watcher.close()
    assert len(result.frames) == frames
    if failure is None:
        assert result.failure is None and result.simulated_fs == 10.0
    else:
        assert result.failure_kind == failure and result.simulated_fs == result.failed_at_fs < 10.0
    for frame in result.frames:
        assert frame.teacher_forces.shape == (6, 3) and frame.spread > 0 and frame.deviation > 0


def test_the_watcher_reports_the_members_spread_and_the_students_deviation():
    members, student = [_toy(1), _toy(2)], _toy(0)
    atoms = _methanol()
    from kdframe.calculator import KdframeCalculator

    forces = [KdframeCalculator(m).get_forces(atoms) for m in members]
    mine = KdframeCalculator(student).get_forces(atoms)
    watcher = Watcher(Ensemble(members))
    _, mean, spread, deviation = watcher(atoms, mine)
    watcher.close()
    assert np.allclose(mean, np.mean(forces, axis=0), atol=1e-6)
    assert np.isclose(spread, np.sqrt(((forces - mean) ** 2).sum(-1).mean()), rtol=1e-5)
    assert np.isclose(deviation, np.sqrt(((mine - mean) ** 2).sum(-1).mean()), rtol=1e-5)


def _config(tmp_path, ani_file, **explore) -> str:
    raw = {"workflow": "ekd", "run_dir": str(tmp_path / "run"), "device": "cpu", "seed": 0,
           "data": {"train": {"path": str(ani_file), "energy": "morse.energy"}},
           "training": {"batch_size": 8, "max_epochs": 2},
           "teachers": {"train": {"count": 2, "model": {"architecture": "toy", "width": 4}}},
           "student": {"model": {"architecture": "toy", "width": 4}, "weights": {"energy": 1, "forces": 1}},
           "control": False,
           "explore": {"rounds": 2, "systems": [{"path": str(ani_file), "max_systems": 2}],
                       "dynamics": {"steps": 12, "every": 3, "temperatures_K": [300, 600]},
                       "select": {"top_k": 4, "min_spacing": 1}, "training": {"max_epochs": 1},
                       "stop_when_stable": False, **explore}}
    path = tmp_path / "ekd.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_exploration_rounds_fine_tune_the_student_and_resume_with_identical_results(tmp_path, ani_file, capsys):
    from kdframe.cli import main

    config = _config(tmp_path, ani_file)
    assert main(["run", config, "--quiet"]) == 0, capsys.readouterr().err
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Exploration rounds" in report and "student, explored 2" in report
    rounds = tmp_path / "run" / "exploration"
    first = json.loads((rounds / "round_1" / "round.json").read_text())
    assert first["trajectories"] == 4 and 0 < first["selected"] <= 4  # 2 systems x 2 temperatures
    assert sum(first["failures"].values()) == first["failed"]
    frames = {r: file_sha256(rounds / f"round_{r}" / "explored.h5") for r in (1, 2)}
    tuned = file_sha256(tmp_path / "run" / "explored_2" / "model.pt")
    from kdframe.data.packed import PackedDataset

    second = PackedDataset.open(rounds / "round_2" / "explored.h5", {"e": "teacher.energy"})
    assert len(second) == first["selected"] + json.loads((rounds / "round_2" / "round.json").read_text())["selected"]
    # As after a kill -9 in round 2: its frames and its fine-tuning are lost; round 1's MD is redone from scratch.
    for path in [rounds / "round_2", tmp_path / "run" / "explored_2", rounds / "round_1"]:
        __import__("shutil").rmtree(path)
    assert main(["run", config, "--quiet"]) == 0, capsys.readouterr().err
    assert {r: file_sha256(rounds / f"round_{r}" / "explored.h5") for r in (1, 2)} == frames
    assert file_sha256(tmp_path / "run" / "explored_2" / "model.pt") == tuned


def test_a_bad_explore_block_is_refused_before_any_work(tmp_path, ani_file, capsys):
    from ase.io import write

    from kdframe.cli import main

    numbers, positions = MOLECULES["water"]  # a periodic system, which the toy architecture cannot run
    write(tmp_path / "box.xyz", Atoms(numbers=numbers, positions=positions, cell=[6, 6, 6], pbc=True), format="extxyz")
    write(tmp_path / "h2s.xyz", Atoms("SH2", positions=[[0, 0, 0], [1.34, 0, 0], [0, 1.34, 0]]), format="extxyz")

    for explore, message in [({"systems": [{"path": "nowhere.xyz"}]}, "explore.systems[0].path: file not found"),
                             ({"weights": {"stress": 1}}, "explore.weights.stress: unknown loss term"),
                             ({"select": {"rank_by": "energy"}}, "explore.select.rank_by"),
                             ({"systems": [{"path": str(ani_file), "names": "box:*"}]},
                              "explore.systems[0]: no molecule of"),
                             ({"dynamics": {"steps": 5, "every": 10}}, "every (10) exceeds steps (5)"),
                             ({"systems": [{"path": "box.xyz"}]}, "explore.systems[0] (box.xyz)"),
                             ({"systems": [{"path": "h2s.xyz"}]}, "has elements [16] that the run's training data")]:
        assert main(["run", _config(tmp_path, ani_file, **explore), "--quiet"]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "run").exists()


def test_a_round_made_with_other_settings_is_refused_and_one_frame_fine_tunes(tmp_path, ani_file, capsys):
    from kdframe.cli import main

    assert main(["run", _config(tmp_path, ani_file, rounds=1, select={"top_k": 1}), "--quiet"]) == 0, \
        capsys.readouterr().err
    assert (tmp_path / "run" / "explored_1" / "model.pt").is_file()  # one frame: all of it trains, none held out
    assert main(["run", _config(tmp_path, ani_file, rounds=1, select={"top_k": 2}), "--quiet"]) == 2
    assert "made with other settings (changed: settings)" in capsys.readouterr().err


def test_the_explored_frames_leave_the_runs_data_a_share_and_their_name_free(tmp_path, ani_file):
    from kdframe.errors import ConfigError
    from kdframe.student import Student
    from kdframe.workflows.explore import Explore

    source = {"path": str(ani_file), "energy": "morse.energy", "weights": {"energy": 1}, "share": 0.8}
    explore = Explore(systems=[{"path": str(ani_file)}], share=0.25)
    with pytest.raises(ConfigError, match=re.escape("explore.share: with the student's sources, explore.share 0.25 + "
                                                    "student.sources.sampled.share 0.8 = 1.05: leave some")):
        explore.check_student(Student(model={"architecture": "toy"}, sources={"sampled": source}))
    with pytest.raises(ConfigError, match="student.sources.explored: the name is taken"):
        explore.check_student(Student(model={"architecture": "toy"}, sources={"explored": {**source, "share": 0.1}}))


def test_fine_tuning_keeps_the_loss_weights_the_students_schedules_end_with(tmp_path, ani_file, capsys):
    """Restarting a schedule (forces 10 -> 3 here) would weigh forces as at the student's first epoch."""
    from kdframe.cli import main
    from kdframe.student import Student
    from kdframe.workflows.explore import settled

    source = {"path": str(ani_file), "energy": "morse.energy", "weights": {"energy": {1: 5, 40: 2}}, "share": 0.3}
    block = Student(model={"architecture": "toy"}, weights={"energy": 1, "forces": {1: 10, 2: 3}},
                    sources={"more": source})
    fixed = settled(block, 60)
    assert fixed.weights == {"energy": 1.0, "forces": 3.0} and fixed.sources["more"].weights == {"energy": 2.0}
    assert settled(block, 1).weights["forces"] == 10.0

    config = _config(tmp_path, ani_file, rounds=1)
    raw = yaml.safe_load(open(config))
    raw["student"]["weights"]["forces"] = {1: 10, 2: 3}  # the run trains 2 epochs
    open(config, "w").write(yaml.safe_dump(raw))
    assert main(["run", config, "--quiet"]) == 0, capsys.readouterr().err
    record = json.loads((tmp_path / "run" / "explored_1" / "stage.json").read_text())
    assert record["weights"] == {"energy": 1.0, "forces": 3.0}


def test_the_schedules_settle_at_the_epoch_the_student_stopped(tmp_path):
    from kdframe.workflows.explore import last_epoch

    (tmp_path / "metrics.csv").write_text("epoch,lr\n" + "".join(f"{e},0.001\n" for e in range(1, 37)))
    assert last_epoch(tmp_path, 60) == 36  # stopped early (termination_patience)
    assert last_epoch(tmp_path / "none", 60) == 60
