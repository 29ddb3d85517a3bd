import numpy as np
import torch

from kdframe.data import read_dataset
from kdframe.knowledge import offline_knowledge
from kdframe.knowledge.ensemble import EnsembleForces
from kdframe.plugins import registry
from kdframe.potential import Ensemble, Potential
from kdframe.teacher import Teacher


def _teacher(seed):
    torch.manual_seed(seed)
    members = [Potential(registry().architectures["toy"], {"width": 8}, [1, 6, 7, 8]) for _ in range(2)]
    return Teacher(Ensemble(members), "t")


def test_ensemble_forces_are_the_mean_of_member_forces(ani_file):
    data = read_dataset(ani_file, {"energy": "morse.energy"})
    teacher = _teacher(0)
    batch = data.batch(np.arange(5))
    averaged = EnsembleForces("f").compute(teacher, batch)
    members = torch.stack([Teacher(m, "m").predict(data.batch(np.arange(5)))["forces"][..., 0]
                           for m in teacher.members])
    assert torch.allclose(averaged, members.mean(0), atol=1e-6)


def test_cache_reused_when_nothing_changed_and_recomputed_when_teacher_changed(ani_file, tmp_path, monkeypatch):
    data = read_dataset(ani_file, {"energy": "morse.energy"})
    calls = []
    original = EnsembleForces.compute
    monkeypatch.setattr(EnsembleForces, "compute", lambda self, t, b: calls.append(1) or original(self, t, b))
    source = EnsembleForces("teacher_forces")

    first = offline_knowledge(source, _teacher(0), data, tmp_path, batch_size=16)
    n_batches = len(calls)
    again = offline_knowledge(source, _teacher(0), data, tmp_path, batch_size=16)
    assert len(calls) == n_batches and np.array_equal(first, again)  # same weights: read from cache

    changed = _teacher(0)
    with torch.no_grad():
        changed.members[1].net.readout[-1].bias.add_(0.01)
    offline_knowledge(source, changed, data, tmp_path, batch_size=16)
    assert len(calls) == 2 * n_batches  # changed teacher: recomputed

    offline_knowledge(source, _teacher(0), data.subset(np.arange(10)), tmp_path, batch_size=16)
    assert len(calls) == 2 * n_batches + 1  # changed dataset: recomputed
    assert len(list(tmp_path.glob("ensemble_forces-*.h5"))) == 3

    # Labels added to the file later (e.g. new QC levels) do not change what a teacher predicts.
    relabelled = data.with_labels(extra=np.zeros(len(data)))
    offline_knowledge(source, _teacher(0), relabelled, tmp_path, batch_size=16)
    assert len(calls) == 2 * n_batches + 1
    moved = data.subset(np.arange(len(data)))
    moved.positions[0, 0] += 0.01
    offline_knowledge(source, _teacher(0), moved, tmp_path, batch_size=16)
    assert len(calls) == 3 * n_batches + 1  # changed geometry: recomputed
