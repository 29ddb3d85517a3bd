"""Data-parallel training and sharded labelling: gloo process groups on CPU, as under ``torchrun``."""

import copy
import os
import socket

import h5py
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from kdframe import distributed
from kdframe.data import read_dataset
from kdframe.data.packed import pack_ani
from kdframe.knowledge import offline_knowledge
from kdframe.knowledge.cache import cache_key, checksum
from kdframe.knowledge.ensemble import EnsembleForces
from kdframe.plugins import registry
from kdframe.teacher import Teacher

from test_training import _trainer
from toy import ToyArchitecture

SOURCE = EnsembleForces("teacher_forces")


def _data(ani_file):
    return read_dataset(ani_file, {"energy": "morse.energy", "forces": "morse.forces"})


def _register_toy() -> None:  # in spawned ranks, and after a test rebuilt the cached registry
    registry().architectures.setdefault("toy", ToyArchitecture())


def _worker(rank: int, world: int, port: int, ani_file, out) -> None:
    """One rank: train straight, train interrupted + resumed, label (fresh and with a finished shard)."""
    env = dict(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port))
    os.environ.update(env)
    torch.set_num_threads(1)
    _register_toy()
    assert distributed.init()
    try:
        trainer = _trainer(ani_file, out / "straight")
        model = trainer.fit()
        result = {"model": model.state_dict(), "valid": trainer.validate(), "history": trainer.history}
        if world > 1:
            packed = _trainer(ani_file.with_name("packed.h5"), out / "packed")  # streamed from disk
            result["packed"] = {"model": packed.fit().state_dict(), "valid": packed.validate()}
            _trainer(ani_file, out / "resumed").fit(stop_after=2)
            result["resumed"] = _trainer(ani_file, out / "resumed").fit().state_dict()
            teacher, data = Teacher(copy.deepcopy(model), "t"), _data(ani_file)
            result["knowledge"] = offline_knowledge(SOURCE, teacher, data, out / "knowledge", batch_size=8,
                                                    progress=False)
            # An interrupted labelling left rank 1's finished shard (here: zeros); it must be reused.
            stem = f"{SOURCE.name}-{SOURCE.label}-{cache_key(SOURCE, teacher, data)}"
            if rank == 1:
                (out / "interrupted").mkdir()
                with h5py.File(out / "interrupted" / f"{stem}.shard1of2.h5", "w") as f:
                    # rank 1's block: batches 3..5 of 8 configurations = configurations 24..47
                    f["value"] = zeros = np.zeros((len(data.species) - int(data.atom_ptr[24]), 3))
                    f.attrs.update({"key": cache_key(SOURCE, teacher, data), "checksum": checksum(zeros)})
            distributed.barrier()
            result["interrupted"] = offline_knowledge(SOURCE, teacher, data, out / "interrupted", batch_size=8,
                                                      progress=False)
        torch.save(result, out / f"rank{rank}.pt")
    finally:
        distributed.finish()
        for name in env:  # one rank runs inside the test process itself
            del os.environ[name]


def _launch(world: int, ani_file, out) -> list[dict]:
    """A process group of ``world`` ranks: forked processes (no re-import: fast), or this process for one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if world == 1:
        _worker(0, 1, port, ani_file, out)
    else:
        mp.start_processes(_worker, (world, port, ani_file, out), nprocs=world, start_method="fork")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from toy import write_ani_file

    _register_toy()
    root = tmp_path_factory.mktemp("ddp")
    ani_file = root / "morse.h5"
    write_ani_file(ani_file)
    plain = _trainer(ani_file, root / "plain")
    model = plain.fit()
    packed = _trainer(pack_ani(ani_file, root / "packed.h5"), root / "plain_packed")
    packed.fit()
    return {"ani_file": ani_file, "root": root, "plain": (model.state_dict(), plain.validate()),
            "plain_history": plain.history,
            "plain_packed": packed.validate(),
            1: _launch(1, ani_file, root / "n1"), 2: _launch(2, ani_file, root / "n2")}


def test_one_process_group_equals_a_plain_run_exactly(runs):
    plain_state, plain_valid = runs["plain"]
    (one,) = runs[1]
    for name, value in plain_state.items():
        assert torch.equal(value, one["model"][name]), name
    assert one["valid"] == plain_valid


def test_two_ranks_train_to_the_same_loss_and_agree(runs):
    _, plain_valid = runs["plain"]
    first, second = runs[2]
    for name, value in first["model"].items():
        assert torch.equal(value, second["model"][name]), name  # every rank holds the same weights
    assert first["valid"] == second["valid"]
    for key, value in plain_valid.items():
        assert first["valid"][key] == pytest.approx(value, rel=0.02), key  # sharded batches: close, not equal
    assert (runs["root"] / "n2" / "straight" / "metrics.csv").read_text().count("\n") == 7  # 6 epochs, one writer
    for column in ("grad_norm_median", "grad_norm_max"):  # the global batch's gradient, the same on every rank
        assert first["history"][0][column] == second["history"][0][column]
        assert first["history"][0][column] == pytest.approx(runs["plain_history"][0][column], rel=0.02), column


def test_two_ranks_stream_a_packed_file_to_the_same_loss(runs):
    first, second = runs[2]
    for name, value in first["packed"]["model"].items():
        assert torch.equal(value, second["packed"]["model"][name]), name
    for key, value in runs["plain_packed"].items():
        assert first["packed"]["valid"][key] == pytest.approx(value, rel=0.02), key


def test_resumed_two_rank_run_ends_with_the_same_weights(runs):
    first = runs[2][0]
    for name, value in first["model"].items():
        assert torch.equal(value, first["resumed"][name]), name


def test_sharded_knowledge_equals_unsharded_and_resumes(runs, tmp_path):
    first, second = runs[2]
    model = copy.deepcopy(_trainer(runs["ani_file"], tmp_path / "m").model)
    model.load_state_dict(first["model"])
    data = _data(runs["ani_file"])
    plain = offline_knowledge(SOURCE, Teacher(model, "t"), data, tmp_path / "knowledge", batch_size=8, progress=False)
    assert np.array_equal(first["knowledge"], plain) and np.array_equal(second["knowledge"], plain)
    assert [p.name for p in (runs["root"] / "n2" / "knowledge").iterdir()] == [
        f"{SOURCE.name}-{SOURCE.label}-{cache_key(SOURCE, Teacher(model, 't'), data)}.h5"]  # shards merged away
    split = int(data.atom_ptr[24])
    resumed = first["interrupted"]
    assert resumed.shape == plain.shape
    assert np.array_equal(resumed[:split], plain[:split]) and not resumed[split:].any()
