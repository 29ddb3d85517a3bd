"""Confidence weighting of a teacher-labelled source: configurations the teachers disagree on teach less."""

import json

import numpy as np
import pytest
import torch
import yaml
from ase import Atoms

from kdframe.batch import Batch
from kdframe.schedule import make_schedule
from kdframe.training import LossTerm
from kdframe.training.loss import rmse_mae

from test_mixture import _ekd_config
from toy import write_ani_file


def _batch() -> Batch:
    """Three configurations of 2, 3 and 1 atoms; spreads 0, the scale, missing."""
    batch = Batch.from_atoms([Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]]),
                              Atoms("OH2", positions=[[0, 0, 0], [0, 0.76, 0.59], [0, -0.76, 0.59]]),
                              Atoms("C", positions=[[0, 0, 0]])])
    batch.labels = {"s.forces": torch.zeros(6, 3), "s.energy": torch.zeros(3),
                    "s.spread": torch.tensor([0.0, 0.2, float("nan")], dtype=torch.float64)}
    return batch


@pytest.mark.parametrize("quantity,shape", [("forces", (6, 3)), ("energy", (3,)), ("atom_energies", (6,))])
def test_each_configurations_squared_residuals_count_its_normalised_confidence(quantity, shape):
    batch = _batch()
    batch.labels["s.atom_energies"] = torch.zeros(6)
    term = LossTerm(quantity, f"s.{quantity}", make_schedule(1.0, "w"), confidence=("s.spread", 0.2))
    residual = torch.full(shape, 2.0)
    weighted = term.weighted(residual, batch)
    w = torch.tensor([1.0, 0.5, 1.0])  # 1 / (1 + (spread / 0.2)^2); a missing spread counts fully
    w = w if quantity == "energy" else w[batch.conf_index]  # forces and atom energies: per atom
    squares = weighted.pow(2) if weighted.dim() == 1 else weighted.pow(2).mean(-1)
    assert torch.allclose(squares, 4.0 * w / w.mean())  # normalised: the term keeps its weight
    assert torch.isclose(weighted.pow(2).mean(), residual.pow(2).mean())
    unweighted = LossTerm(quantity, f"s.{quantity}", make_schedule(1.0, "w"))
    assert torch.equal(unweighted.weighted(residual, batch), residual)


def test_missing_labels_are_dropped_before_weighting():
    batch = _batch()
    batch.labels["s.energy"] = torch.tensor([0.0, float("nan"), 0.0])  # the water has no energy label
    term = LossTerm("energy", "s.energy", make_schedule(1.0, "w"), confidence=("s.spread", 0.2))
    prediction = {"energy": torch.full((3, 1), 3.0)}
    residual = term.residual(prediction, batch)
    assert residual.shape == (2,)
    assert torch.allclose(term.weighted(residual, batch), torch.tensor([3.0, 3.0]))  # weights of H2 and C: 1


def test_a_tiny_scale_keeps_gradients_finite():
    """(spread / scale)^2 overflowing float32 must not make every weight 0 (and sqrt(0)'s gradient NaN)."""
    batch = _batch()
    term = LossTerm("energy", "s.energy", make_schedule(1.0, "w"), confidence=("s.spread", 1e-30))
    residual = torch.ones(3, requires_grad=True)
    loss = sum(rmse_mae(term.weighted(residual, batch)))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(residual.grad).all()


def test_curvature_terms_refuse_confidence():
    with pytest.raises(ValueError, match="confidence weights are for energy, force and atom-energy terms"):
        LossTerm("hvp", "h", make_schedule(1.0, "w"), probe="p", confidence=("s.spread", 0.2))


def _sources(confidence) -> dict:
    source = {"path": "sampled.h5", "labelled_by": "teachers", "weights": {"energy": 1, "forces": 10}, "share": 0.5}
    return {"sampled": source | ({"confidence": confidence} if confidence else {})}


def test_an_ekd_student_weights_the_teachers_labels_by_their_spread(tmp_path, ani_file, capsys):
    """The teachers' per-configuration force spread (teacher.forces_std of their labelling) weights the student's
    loss on the source; with a scale far above every spread the student is the unweighted one, bit for bit."""
    from kdframe.cli import main
    from kdframe.data.packed import PackedDataset
    from kdframe.potential import Potential

    write_ani_file(tmp_path / "sampled.h5", n_conf=10, seed=7)
    students = {}
    for name, confidence in (("plain", None), ("weighted", {"scale": 1e-3}), ("far", {"scale": 1e12})):
        config = _ekd_config(tmp_path, ani_file, _sources(confidence))
        raw = yaml.safe_load(open(config))
        raw["run_dir"] = str(tmp_path / name)
        open(config, "w").write(yaml.safe_dump(raw))
        assert main(["run", config, "--quiet"]) == 0, capsys.readouterr().err
        students[name] = Potential.load(tmp_path / name / "student" / "model.pt").state_dict()
    labelled = next((tmp_path / "weighted" / "knowledge").glob("teacher_labels-sampled-*.h5"))
    spread = PackedDataset.open(labelled, {"s": "teacher.forces_std"}).labels["s"]
    assert np.all(spread > 1e-3)  # so every configuration of "weighted" counts less than half
    record = json.loads((tmp_path / "weighted" / "student" / "stage.json").read_text())
    assert record["sources"]["sampled"][0]["confidence"] == {"key": "teacher.forces_std", "scale": 1e-3}
    assert "confidence" not in json.loads((tmp_path / "plain" / "student" / "stage.json").read_text())["sources"][
        "sampled"][0]
    assert all(torch.equal(students["plain"][k], students["far"][k]) for k in students["plain"])
    assert any(not torch.equal(students["plain"][k], students["weighted"][k]) for k in students["plain"])


@pytest.mark.parametrize("confidence,message", [
    ({"scale": 0}, "student.sources.sampled.confidence.scale: Input should be greater than 0"),
    ({"scale": float("inf")}, "student.sources.sampled.confidence.scale: Input should be a finite number"),
    ({"scale": True}, "student.sources.sampled.confidence.scale: True is not a number (valid: a spread > 0"),
    ({"key": "teacher.forces_std"}, "student.sources.sampled.confidence.scale: Field required"),
    ({"scale": 0.1, "key": "teacher.energy"}, "student.sources.sampled.confidence.key: the teachers' labels hold no "
                                              "'teacher.energy' (valid: teacher.forces_std, teacher.energy_std)"),
    ({"scale": 0.1, "size": 2}, "student.sources.sampled.confidence.size")])
def test_bad_confidence_settings_are_refused_before_any_work(tmp_path, ani_file, capsys, confidence, message):
    from kdframe.cli import main

    write_ani_file(tmp_path / "sampled.h5", n_conf=4)
    assert main(["run", _ekd_config(tmp_path, ani_file, _sources(confidence)), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_file_source_without_the_spread_key_is_refused_naming_it(tmp_path, ani_file, capsys):
    from kdframe.cli import main

    write_ani_file(tmp_path / "sampled.h5", n_conf=4)
    sources = {"s": {"path": "sampled.h5", "energy": "morse.energy", "weights": {"energy": 1}, "share": 0.5,
                     "confidence": {"scale": 0.1}}}
    assert main(["run", _ekd_config(tmp_path, ani_file, sources), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "student.sources.s: " in err and "key 'teacher.forces_std' (for 's.spread') not found" in err
    assert "sampled.h5" in err


def _labelled_file(tmp_path, ani_file, *options) -> str:
    """sampled.h5 labelled by two toy teachers (teacher-label: spreads, per-atom spreads, atom energies)."""
    from kdframe.cli import main
    from kdframe.plugins import registry
    from kdframe.potential import Potential

    members = []
    for i in range(2):
        torch.manual_seed(i)
        Potential(registry().architectures["toy"], {"width": 4}, [1, 6, 7, 8]).save(tmp_path / f"m{i}.pt")
        members += ["--model", str(tmp_path / f"m{i}.pt")]
    write_ani_file(tmp_path / "sampled.h5", n_conf=6, seed=3)
    assert main(["data", "teacher-label", str(tmp_path / "sampled.h5"), str(tmp_path / "labelled.h5"), *members,
                 "--no-progress", *options]) == 0
    return "labelled.h5"


@pytest.mark.parametrize("key,message", [
    ("teacher.forces_std_atoms", "does not hold one value per configuration"),
    ("teacher.atom_energies", "does not hold one value per configuration")])
def test_a_confidence_key_that_is_no_spread_is_refused_before_any_work(tmp_path, ani_file, capsys, key, message):
    path = _labelled_file(tmp_path, ani_file, "--per-atom-spread", "--atom-energies")
    from kdframe.cli import main

    sources = {"s": {"path": path, "forces": "teacher.forces", "weights": {"forces": 1}, "share": 0.5,
                     "confidence": {"scale": 0.1, "key": key}}}
    assert main(["run", _ekd_config(tmp_path, ani_file, sources), "--quiet"]) == 2
    assert f"student.sources.s.confidence.key: key {key!r} of {path} {message}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_one_teacher_has_no_spread_to_weight_by(tmp_path, ani_file, capsys):
    from kdframe.cli import main

    write_ani_file(tmp_path / "sampled.h5", n_conf=4)
    config = _ekd_config(tmp_path, ani_file, _sources({"scale": 0.1}))
    raw = yaml.safe_load(open(config))
    raw["teachers"]["train"]["count"] = 1
    open(config, "w").write(yaml.safe_dump(raw))
    assert main(["run", config, "--quiet"]) == 2
    assert "student.sources.sampled.confidence: one teacher has no spread" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
