"""Teacher H·v as a labelled source's knowledge: ``teacher-label --hvp`` and ``weights: {hvp: ...}`` (methods.md §4)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from kdframe.cli import main
from kdframe.data.packed import PackedDataset
from kdframe.data.readers import read_dataset
from kdframe.potential import Ensemble, Potential
from kdframe.probes import ProbeSettings, fixed_probes

from test_mixture import _ekd_config
from test_teacher_labelling import _label, _members
from toy import write_ani_file

HVP_KEYS = {"hvp": "teacher.hvp", "probe": "teacher.hvp_probe"}


def _ensemble_forces(members: list[Potential], data, positions: np.ndarray) -> np.ndarray:
    batch = data.batch(np.arange(len(data)))
    batch.positions = torch.as_tensor(positions, dtype=torch.float64)
    return Ensemble(members)(batch, forces=True)["forces"][..., 0].detach().numpy()


@pytest.mark.parametrize("workers", [0, 2])
def test_hvp_labels_are_the_ensembles_curvature_along_fixed_unit_probes(tmp_path, ani_file, workers):
    """H·v against central differences of the ensemble's mean forces along each configuration's probe; the probes
    are the fixed ones of its index, of unit norm; without --hvp there are none."""
    out = tmp_path / "labelled.h5"
    assert _label(ani_file, out, *_members(tmp_path), "--chunk-size", 10, "--hvp", "--hvp-probes", "gaussian",
                  "--workers", workers) == 0
    data = read_dataset(ani_file, {})
    got = PackedDataset.open(out, HVP_KEYS)
    batch = got.batch(np.arange(len(got)))
    probes = batch.labels["probe"].numpy()
    assert np.allclose(probes, fixed_probes(data, ProbeSettings(kind="gaussian")), rtol=0, atol=1e-12)
    conf = np.repeat(np.arange(len(data)), data.n_atoms)
    assert np.allclose(np.bincount(conf, (probes ** 2).sum(1)), 1.0)
    members = [Potential.load(tmp_path / f"m{i}.pt") for i in range(3)]
    h = 1e-4
    plus = _ensemble_forces(members, data, data.positions + h * probes)
    minus = _ensemble_forces(members, data, data.positions - h * probes)
    expected = -(plus - minus) / (2 * h)  # H v = -dF/dx · v
    assert np.abs(expected).max() > 1e-2  # not trivially zero
    assert np.allclose(batch.labels["hvp"].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert _label(ani_file, tmp_path / "plain.h5", *_members(tmp_path)) == 0
    assert "teacher.hvp" not in PackedDataset.open(tmp_path / "plain.h5", {}).store.kinds


def test_changed_probes_refuse_to_resume_an_unfinished_labelling(tmp_path, ani_file, capsys):
    from kdframe import teacher_labelling

    out = tmp_path / "labelled.h5"
    original = teacher_labelling.label_chunk
    calls = []

    def dies_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("kdframe.teacher_labelling.label_chunk", dies_at_the_second)
        assert _label(ani_file, out, *_members(tmp_path), "--chunk-size", 10, "--hvp") == 130
    capsys.readouterr()
    assert _label(ani_file, out, *_members(tmp_path), "--chunk-size", 10, "--hvp", "--hvp-probes", "one_hot") == 2
    err = capsys.readouterr().err
    assert "changed: hvp" in err and err.count("\n") == 1
    assert _label(ani_file, out, *_members(tmp_path), "--chunk-size", 10, "--hvp") == 0
    assert "1 already done" in capsys.readouterr().out


@pytest.mark.parametrize("packed", [False, True])
def test_a_subset_gets_the_probes_of_the_whole_file(tmp_path, ani_file, packed):
    """Probes are drawn from each configuration's index in the input file, whatever its format, so a run's ``limit``
    labels its configurations along the same probes as a run on the whole file."""
    from kdframe.data.packed import pack_ani
    from kdframe.teacher_labelling import TeacherSpec, teacher_label

    source = ani_file
    if packed:
        source = tmp_path / "packed.h5"
        pack_ani(ani_file, source)
    spec = TeacherSpec(models=tuple(a for a in _members(tmp_path) if a != "--model"))
    settings = ProbeSettings(seed=3)
    teacher_label(source, tmp_path / "whole.h5", spec, hvp=settings)
    confs = [17, 2, 9]
    teacher_label(source, tmp_path / "part.h5", spec, hvp=settings, confs=confs)
    whole, part = (PackedDataset.open(tmp_path / f"{n}.h5", HVP_KEYS) for n in ("whole", "part"))
    for key in HVP_KEYS:
        assert np.allclose(part.batch(np.arange(3)).labels[key].numpy(), whole.batch(np.array(confs)).labels[key].numpy(),
                           rtol=0, atol=1e-12), key


def test_probe_settings_without_hvp_are_one_error(tmp_path, ani_file, capsys):
    assert _label(ani_file, tmp_path / "out.h5", *_members(tmp_path), "--hvp-probes", "gaussian") == 2
    err = capsys.readouterr().err
    assert "--hvp-probes: probe settings are for --hvp" in err and err.count("\n") == 1


def _hvp_source(**extra) -> dict:
    return {"sampled": {"path": "sampled.h5", "labelled_by": "teachers", "share": 0.5,
                        "weights": {"energy": 1, "forces": 10, "hvp": 1}, **extra}}


def test_an_ekd_student_learns_the_teachers_hvp_on_a_source(tmp_path, ani_file, capsys):
    """The teachers label the source's H·v (cached with the probe settings in its key); the student's loss has an hvp
    term on it, validated like the others; another probe kind is another label file and another student."""
    write_ani_file(tmp_path / "sampled.h5", n_conf=10, seed=7)
    students = {}
    for name, extra in (("rademacher", {}), ("gaussian", {"probes": {"kind": "gaussian"}}),
                        ("without", None)):
        sources = _hvp_source(**(extra or {}))
        if extra is None:
            del sources["sampled"]["weights"]["hvp"]
        config = _ekd_config(tmp_path, ani_file, sources)
        raw = yaml.safe_load(open(config))
        raw["run_dir"] = str(tmp_path / name)
        open(config, "w").write(yaml.safe_dump(raw))
        assert main(["run", config, "--quiet"]) == 0, capsys.readouterr().err
        assert "non-finite" not in capsys.readouterr().err  # other sources' rows have no probe: no NaN gradients
        students[name] = Potential.load(tmp_path / name / "student" / "model.pt").state_dict()
    header = (tmp_path / "rademacher" / "student" / "metrics.csv").read_text().splitlines()[0]
    assert "valid_rmse[hvp:sampled.hvp]" in header
    assert "hvp" not in (tmp_path / "without" / "student" / "metrics.csv").read_text().splitlines()[0]
    labelled = next((tmp_path / "gaussian" / "knowledge").glob("teacher_labels-sampled-*.h5"))
    with_probes = PackedDataset.open(labelled, HVP_KEYS)
    assert np.isfinite(with_probes.batch(np.arange(len(with_probes))).labels["hvp"].numpy()).all()
    record = json.loads((tmp_path / "gaussian" / "student" / "stage.json").read_text())["sources"]["sampled"][0]
    assert record["hvp"] == "teacher.hvp" and record["hvp_probe"] == "teacher.hvp_probe"
    assert "hvp" not in json.loads((tmp_path / "without" / "student" / "stage.json").read_text())["sources"][
        "sampled"][0]
    for other in ("gaussian", "without"):
        assert any(not torch.equal(students["rademacher"][k], students[other][k]) for k in students[other])


@pytest.mark.parametrize("source,message", [
    ({"probes": {"regime": "fresh"}}, "student.sources.sampled.probes.regime: the teachers label one fixed probe"),
    ({"probes": {"kind": "sobol"}}, "student.sources.sampled.probes.kind"),
    ({"hvp": "teacher.hvp"}, "student.sources.sampled.hvp: the teachers label this source"),
    ({"hvp_probe": "teacher.hvp_probe"}, "student.sources.sampled.hvp_probe: the teachers label this source"),
    ({"weights": {"energy": 1}, "probes": {"kind": "gaussian"}}, "student.sources.sampled.probes: probes are for an "
                                                                 "hvp term the teachers label"),
    ({"labelled_by": "file", "energy": "e", "forces": "f", "hvp": "h"}, "student.sources.sampled.hvp_probe: name the "
                                                                          "key"),
    ({"labelled_by": "file", "energy": "e", "forces": "f", "weights": {"energy": 1}, "hvp_probe": "p"},
     "student.sources.sampled.hvp_probe: probes without H·v"),
])
def test_bad_hvp_source_settings_are_refused_before_any_work(tmp_path, ani_file, capsys, source, message):
    write_ani_file(tmp_path / "sampled.h5", n_conf=4)
    assert main(["run", _ekd_config(tmp_path, ani_file, {"sampled": _hvp_source()["sampled"] | source}), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_file_probes_that_are_not_unit_vectors_are_one_error_naming_the_key(tmp_path, ani_file, capsys):
    """A file source's hvp probes scaled on reading (an ANI-layout file read in Hartree) are refused, not learned."""
    labelled = tmp_path / "labelled.h5"
    write_ani_file(tmp_path / "sampled.h5", n_conf=4)
    assert _label(tmp_path / "sampled.h5", labelled, *_members(tmp_path), "--hvp") == 0
    source = {"path": str(labelled), "energy": "teacher.energy", "hvp": "teacher.hvp", "hvp_probe": "teacher.hvp",
              "weights": {"energy": 1, "hvp": 1}, "share": 0.5}
    capsys.readouterr()
    assert main(["run", _ekd_config(tmp_path, ani_file, {"sampled": source}), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "sources.sampled.hvp_probe: key 'teacher.hvp' of" in err and "not 1" in err and err.count("\n") == 1, err
    source |= {"hvp": "teacher.energy", "hvp_probe": "teacher.hvp_probe"}  # one value per configuration
    assert main(["run", _ekd_config(tmp_path, ani_file, {"sampled": source}), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "sources.sampled.hvp: key 'teacher.energy' of" in err and "3-vector per atom" in err, err
    assert not (tmp_path / "run" / "teacher_1").exists()  # before any work
