"""Projected Hessian learning (methods.md §4): probes, the HVP and Hessian loss terms, teacher HVPs."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

import test_conformance
from kdframe import derivatives
from kdframe.batch import Batch
from kdframe.data import read_dataset
from kdframe.knowledge import offline_knowledge
from kdframe.knowledge.hvp import TeacherHVP
from kdframe.plugins import registry
from kdframe.potential import Ensemble, Potential
from kdframe.probes import ProbeSettings, batch_probes, fixed_probes, fresh_rng
from kdframe.schedule import make_schedule
from kdframe.teacher import Teacher
from kdframe.testing import ArchitectureConformance, Conformance
from kdframe.training import LossTerm, Trainer, TrainSettings

from toy import morse_energy

KINDS = ("one_hot", "rademacher", "gaussian")
ONE = make_schedule(1.0, "w")
# The conformance tests' tiny hyperparameters, by architecture name (one place to keep them).
TINY = {c.architecture if isinstance(c.architecture, str) else c.architecture.name: c.hyperparameters
        for c in vars(test_conformance).values()
        if isinstance(c, type) and issubclass(c, ArchitectureConformance) and c is not ArchitectureConformance}


def _toy(seed: int = 0, dtype=torch.float64) -> Potential:
    torch.manual_seed(seed)
    return Potential(registry().architectures["toy"], {"width": 8}, [1, 6, 7, 8]).to(dtype)


def _data(ani_file):
    return read_dataset(ani_file, {"energy": "morse.energy", "forces": "morse.forces"})


def _moved(batch: Batch, positions: torch.Tensor) -> Batch:
    return dataclasses.replace(batch, positions=positions.detach().clone(), labels=dict(batch.labels))


# --- HVPs through the loss term equal differences of the core's forces, for every architecture -------
@pytest.mark.parametrize("name", ["toy", "hippynn", "torchani", "mace"])  # the built-ins, whatever else is installed
def test_hvp_equals_finite_differences_of_forces(name):
    kit = Conformance(name, TINY.get(name, {}))
    model = kit.potential()
    head = len(model.heads) - 1
    batch = dataclasses.replace(kit.batch(("water", "ammonia")), index=torch.tensor([4, 9]))
    h, x0 = 1e-5, batch.positions.detach()
    for kind in KINDS if name == "toy" else ("rademacher",):  # probes do not depend on the architecture
        v = batch_probes(batch, ProbeSettings(kind=kind, seed=2))
        b = _moved(batch, x0)
        b.labels["v"] = v
        term = LossTerm("hvp", "ref", ONE, head, probe="v")
        hv = term.predict(model(b, create_graph=True), b, create_graph=False)

        def forces(x):
            return model(_moved(batch, x))["forces"][..., head].detach()

        fd = -(forces(x0 + h * v) - forces(x0 - h * v)) / (2 * h)
        scale = max(1.0, float(fd.abs().max()))
        assert float((hv - fd).abs().max()) < 1e-5 * scale, (name, kind)


def test_full_hessian_layout_and_contraction():
    model = _toy()
    kit = Conformance("toy", {"width": 8})
    batch = dataclasses.replace(kit.batch(("water", "methanol")), index=torch.tensor([0, 1]))
    force = model(batch, create_graph=True)["forces"][..., 0]
    full = derivatives.hessian(force, batch, create_graph=False, max_atoms=7)
    assert full.shape == (9, 3, 7, 3)
    blocks = []
    for c, n in enumerate(batch.atoms_per_conf().tolist()):
        atoms = batch.conf_index == c
        species, x = batch.species[atoms], batch.positions.detach()[atoms].flatten()

        def energy(x, species=species, n=n):
            one = Batch(species, x.reshape(n, 3), torch.zeros(n, dtype=torch.long), 1)
            return model(one, forces=False)["energy"][0, 0]

        blocks.append(torch.autograd.functional.hessian(energy, x).numpy())
    label = torch.from_numpy(derivatives.pack_hessians(blocks, max_atoms=7))
    inside = ~torch.isnan(label)
    assert torch.allclose(full[inside], label[inside], atol=1e-9)
    assert torch.all(full[~inside] == 0) and inside.sum() == 3 * 27 + 6 * 54
    v = batch_probes(batch, ProbeSettings(kind="gaussian"))
    hv = derivatives.hessian_vector_product(force, batch.positions, v, create_graph=False, retain_graph=True)
    assert torch.allclose(derivatives.hessian_times(label, v, batch), hv, atol=1e-9)


# --- probes ------------------------------------------------------------------------------------------
def _many(n_conf: int, n_atoms: int) -> Batch:
    n = n_conf * n_atoms
    return Batch(torch.ones(n, dtype=torch.long), torch.zeros(n, 3),
                 torch.arange(n_conf).repeat_interleave(n_atoms), n_conf, index=torch.arange(n_conf))


@pytest.mark.parametrize("kind", KINDS)
def test_probes_are_unit_vectors_with_isotropic_second_moment(kind):
    batch = _many(6000, 3)
    v = batch_probes(batch, ProbeSettings(kind=kind, regime="fresh"), fresh_rng(ProbeSettings(), 0, 1))
    flat = v.reshape(6000, 9).double()
    assert torch.allclose(flat.norm(dim=1), torch.ones(6000, dtype=torch.float64))
    second = 9 * flat.T @ flat / 6000  # E[v vᵀ] = I / 3n
    assert float((second - torch.eye(9, dtype=torch.float64)).abs().max()) < 0.2, second
    # so the mean squared HVP error per component estimates the mean squared Hessian-element error
    error = torch.randn(9, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    error = error + error.T
    estimate = (flat @ error).pow(2).mean(1).mean()
    assert abs(float(estimate / error.pow(2).mean()) - 1) < 0.1
    if kind == "one_hot":
        assert torch.all((flat != 0).sum(1) == 1)


def test_fixed_probes_depend_only_on_seed_and_configuration_index(ani_file):
    data = _data(ani_file)
    settings = ProbeSettings(kind="rademacher", seed=5)
    label = fixed_probes(data, settings)
    assert label.shape == (len(data.species), 3)
    confs = np.array([30, 2, 17])
    batch = data.batch(confs)
    assert np.array_equal(batch_probes(batch, settings).numpy(), label[data.atom_indices(confs)])
    assert not np.array_equal(fixed_probes(data, settings.model_copy(update={"seed": 6})), label)
    fresh = settings.model_copy(update={"regime": "fresh"})
    a = batch_probes(batch, fresh, fresh_rng(fresh, 1, 3))
    assert torch.equal(a, batch_probes(batch, fresh, fresh_rng(fresh, 1, 3)))
    assert not torch.equal(a, batch_probes(batch, fresh, fresh_rng(fresh, 1, 4)))
    assert torch.equal(batch_probes(batch, fresh), batch_probes(batch, settings))  # no generator: the fixed ones


# --- teacher HVPs as knowledge -------------------------------------------------------------------------
def test_ensemble_hvp_is_the_hvp_of_the_mean_energy(ani_file):
    data = _data(ani_file)
    members = [_toy(1), _toy(2)]
    batch = data.batch(np.arange(6))
    source = TeacherHVP("teacher_hvp", {"probes": {"kind": "gaussian"}})
    ensemble = source.compute(Teacher(Ensemble(members), "e"), batch)
    each = [source.compute(Teacher(m, "m"), data.batch(np.arange(6))) for m in members]
    assert torch.allclose(ensemble, (each[0] + each[1]) / 2, atol=1e-10)
    with pytest.raises(ValueError, match="fresh probes are drawn by the trainer"):
        TeacherHVP("x", {"probes": {"regime": "fresh"}}).compute(Teacher(_toy(1), "t"), batch)


def test_teacher_hvp_cache_is_reused_and_recomputed_when_probes_change(ani_file, tmp_path, monkeypatch):
    assert registry().knowledge_sources["teacher_hvp"] is TeacherHVP
    data = _data(ani_file).subset(np.arange(20))
    teacher = Teacher(_toy(1), "t")
    calls = []
    original = TeacherHVP.compute
    monkeypatch.setattr(TeacherHVP, "compute", lambda self, t, b: calls.append(1) or original(self, t, b))

    def run(**probes):
        return offline_knowledge(TeacherHVP("teacher_hvp", {"probes": probes}), teacher, data, tmp_path,
                                 batch_size=8, progress=False)

    first = run(kind="rademacher", seed=1)
    assert first.shape == (len(data.species), 3) and len(calls) == 3
    assert np.array_equal(run(kind="rademacher", seed=1), first) and len(calls) == 3  # reused
    assert not np.allclose(run(kind="rademacher", seed=2), first) and len(calls) == 6  # new seed
    run(kind="one_hot", seed=1)
    assert len(calls) == 9  # new kind
    assert len(list(tmp_path.glob("teacher_hvp-*.h5"))) == 3


# --- the HVP loss term -----------------------------------------------------------------------------------
def _hvp_term(source: TeacherHVP) -> LossTerm:
    """The student's loss term for ``source``'s HVPs: the probes the teacher's H·v was taken along."""
    return LossTerm("hvp", source.label, ONE, 0, probe=source.probe_label)


def _hvp_setup(ani_file, tmp_path):
    data = _data(ani_file).subset(np.arange(24))
    teacher_model = _toy(1)
    source = TeacherHVP("teacher_hvp", {"probes": {"kind": "rademacher", "seed": 3}})
    value = offline_knowledge(source, Teacher(copy.deepcopy(teacher_model), "t"), data, tmp_path, progress=False)
    return source, source.with_labels(data, value), teacher_model


def test_hvp_loss_is_zero_for_the_teacher_and_one_step_lowers_it(ani_file, tmp_path):
    source, data, teacher_model = _hvp_setup(ani_file, tmp_path)
    term = _hvp_term(source)
    batch = data.batch(np.arange(8, 20), labels=[term.label, term.probe])

    def loss(model):
        b = _moved(batch, batch.positions)
        rmse, mae = term.errors(model(b, create_graph=True), b)
        return rmse + mae

    assert float(loss(teacher_model)) < 1e-10
    student = _toy(7)
    optimiser = torch.optim.Adam(student.trainable_weights(), lr=1e-3)
    before = loss(student)
    assert float(before) > 1e-3
    optimiser.zero_grad()
    before.backward()
    grads = [p.grad for p in student.trainable_weights() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    optimiser.step()
    assert float(loss(student)) < float(before)


def test_trainer_on_teacher_hvps_lowers_the_hvp_error(ani_file, tmp_path):
    source, data, _ = _hvp_setup(ani_file, tmp_path)
    settings = TrainSettings(batch_size=8, max_epochs=3, lr=3e-3, weight_l2=0.0, dtype="float64")
    trainer = Trainer(_toy(7), [_hvp_term(source)], data.subset(np.arange(16)), data.subset(np.arange(16, 24)),
                      settings, tmp_path / "run", progress=False)
    assert trainer.labels == ["teacher_hvp", "teacher_hvp:probe"] and trainer.needs_forces
    before = trainer.validate()["valid_rmse[hvp:teacher_hvp]"]
    trainer.fit()
    assert trainer.history[-1]["valid_rmse[hvp:teacher_hvp]"] < before


def test_online_teacher_hvps_along_fresh_probes(ani_file, tmp_path):
    """Fresh probes per minibatch, the float64 teacher's H·v taken along them online for a float32 student."""
    data = _data(ani_file).subset(np.arange(24))
    source = TeacherHVP("teacher_hvp", {"probes": {"kind": "gaussian", "regime": "fresh", "seed": 4}})
    settings = TrainSettings(batch_size=8, max_epochs=2, lr=3e-3, weight_l2=0.0)
    trainer = Trainer(_toy(7), [_hvp_term(source)], data.subset(np.arange(16)), data.subset(np.arange(16, 24)),
                      settings, tmp_path / "run", online=[(source, Teacher(_toy(1), "t"))],
                      probes={source.probe_label: source.settings.probes}, progress=False)
    assert trainer.labels == []
    before = trainer.validate()["valid_rmse[hvp:teacher_hvp]"]
    trainer.fit()
    assert trainer.history[-1]["valid_rmse[hvp:teacher_hvp]"] < before


def _with_morse_hessians(data):
    blocks = []
    for c in range(len(data)):
        atoms = slice(data.atom_ptr[c], data.atom_ptr[c + 1])
        z = torch.from_numpy(data.species[atoms])
        x = torch.from_numpy(data.positions[atoms]).flatten()
        blocks.append(torch.autograd.functional.hessian(lambda x: morse_energy(z, x.reshape(-1, 3)), x).numpy())
    return data.with_labels(hessian=derivatives.pack_hessians(blocks))


@pytest.mark.parametrize("fit", ["hvp", "hessian"])
def test_fresh_probe_hvp_and_full_hessian_training_on_hessian_labels(ani_file, tmp_path, fit):
    """E-F-HVP (fresh Gaussian probes against a QC-like Hessian label) and E-F-H both lower the Hessian error."""
    data = _with_morse_hessians(_data(ani_file).subset(np.r_[0:8, 12:20, 36:44]))
    probes = {"hessian:probe": ProbeSettings(kind="gaussian", regime="fresh", seed=1)}
    terms = [LossTerm("hvp", "hessian", make_schedule(1.0 if fit == "hvp" else 0.0, "w"), probe="hessian:probe"),
             LossTerm("hessian", "hessian", make_schedule(1.0 if fit == "hessian" else 0.0, "w"))]
    settings = TrainSettings(batch_size=6, max_epochs=2, lr=3e-3, weight_l2=0.0, dtype="float64")
    trainer = Trainer(_toy(7), terms, data.subset(np.arange(18)), data.subset(np.arange(18, 24)), settings,
                      tmp_path / fit, probes=probes, monitor=terms[1], progress=False)
    assert trainer.labels == ["hessian"]
    before = trainer.validate()
    trainer.fit()
    after = trainer.history[-1]
    for name in ("valid_rmse[hvp:hessian]", "valid_rmse[hessian:hessian]"):
        assert after[name] < before[name], (name, before, after)
