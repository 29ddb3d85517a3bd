"""Offline knowledge, computed once and cached in HDF5 beside the run.

The cache key hashes the teacher's weights, the dataset's content and the
source's settings, so a changed teacher or dataset never reuses a stale file.
Each file also holds a checksum of its values, checked whenever it is reused: a
file that is truncated, damaged or whose values were changed afterwards is
computed again (with a note saying why), never trusted by its name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from .. import distributed
from ..data.dataset import Dataset
from ..errors import RunStateError
from ..io import atomic_write, is_environment_error, note
from ..potential import model_dtype
from ..teacher import Teacher
from .base import KnowledgeSource


def cache_key(source: KnowledgeSource, teacher: Teacher, dataset: Dataset) -> str:
    # Knowledge depends on the geometries only: labels added to the file later do not invalidate it.
    parts = {"teacher": teacher.fingerprint(), "data": dataset.content_hash(labels=()), **source.describe()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def offline_knowledge(
    source: KnowledgeSource, teacher: Teacher, dataset: Dataset, cache_dir: str | Path,
    batch_size: int = 64, device: str | torch.device = "cpu", progress: bool = True,
) -> np.ndarray:
    """The source's label for every configuration, from cache when nothing changed.

    Under ``torchrun`` each rank labels a contiguous block of the batches into its own shard file
    (written atomically, reused when an interrupted labelling is run again with as many ranks); rank 0
    then merges the shards, in order, into the cache file. Batches are the same as in a plain run, so
    the cache holds the same values.
    """
    key = cache_key(source, teacher, dataset)
    path = Path(cache_dir) / f"{source.name}-{source.label}-{key}.h5"
    if path.is_file():
        cached, problem = _checked(path, key)
        if problem is None:
            return cached
        note(f"{path}: {problem}; computing it again")
    distributed.init()
    rank, ranks = distributed.rank(), distributed.world_size()
    part = path.with_name(f"{path.stem}.shard{rank}of{ranks}.h5") if ranks > 1 else path
    if part != path and part.is_file() and _checked(part, key, whole=False)[1] is not None:
        part.unlink()  # a damaged shard is labelled again
    if part == path or not part.is_file():  # a finished shard of an interrupted labelling is reused
        batches = list(dataset.batch_indices(batch_size))
        mine = [batches[i] for i in distributed.shard(np.arange(len(batches)))]
        dtype = model_dtype(teacher.model)
        teacher.model.to(device)
        chunks = [source.compute(teacher, dataset.batch(confs, labels=()).to(device, dtype)).cpu().double().numpy()
                  for confs in tqdm(mine, desc=f"{source.name} from {teacher.name}", leave=False,
                                    disable=not (progress and distributed.is_main()))]
        _write(part, np.concatenate(chunks) if chunks else None, key, teacher, dataset, source)
    if ranks > 1:
        distributed.barrier()
        if distributed.is_main():
            shards = [path.with_name(f"{path.stem}.shard{r}of{ranks}.h5") for r in range(ranks)]
            values = []
            for shard in shards:
                value, problem = _checked(shard, key, whole=False)
                if problem is not None:
                    raise RunStateError(f"{shard}: {problem}; delete it and run again")
                values += [] if value is None else [value]  # an empty shard has no value
            _write(path, np.concatenate(values), key, teacher, dataset, source)
            for shard in shards:
                shard.unlink()
        distributed.barrier()
    value, problem = _checked(path, key)
    if problem is not None:  # just written: only a failing disk or a concurrent writer gets here
        raise RunStateError(f"{path}: {problem}, right after it was written; check the disk, delete that file "
                            "and run again")
    return value


def checksum(value: np.ndarray | None) -> str:
    """SHA-256 of the values (as float64) and their shape; what a knowledge file records and is checked against."""
    h = hashlib.sha256()
    if value is not None:
        value = np.ascontiguousarray(value, dtype=np.float64)
        h.update(json.dumps(value.shape).encode())
        h.update(value.tobytes())
    return f"sha256:{h.hexdigest()}"


def _checked(path: Path, key: str, whole: bool = True) -> tuple[np.ndarray | None, str | None]:
    """(values, None) for a good cache file; (None, what is wrong) for one to compute again.

    A shard (``whole=False``) may be empty (no value): a rank that got no batches.
    """
    try:
        with h5py.File(path, "r") as f:
            value = f["value"][()] if "value" in f else None
            stored, stored_key = f.attrs.get("checksum"), f.attrs.get("key")
    except Exception as exc:  # noqa: BLE001 - truncated or not HDF5: h5py raises OSError (or others)
        if is_environment_error(exc):
            raise
        return None, f"unreadable knowledge file, truncated or damaged ({' '.join(str(exc).split())})"
    if stored is None:
        return None, "the knowledge file holds no checksum (written by an older kdframe), so its values cannot be checked"
    if stored_key != key:
        return None, f"the knowledge file was made for another teacher, data or settings (key {stored_key})"
    if str(stored) != checksum(value):
        return None, "the knowledge values do not match the checksum stored when they were written (changed since)"
    if whole and value is None:
        return None, "the knowledge file holds no values"
    return value, None


def _write(path: Path, value: np.ndarray | None, key: str, teacher: Teacher, dataset: Dataset,
           source: KnowledgeSource) -> None:
    def write(f) -> None:
        with h5py.File(f, "w") as h5:
            if value is not None:
                h5.create_dataset("value", data=value)
            h5.attrs.update({"key": key, "teacher": teacher.name, "dataset": dataset.source,
                             "settings": json.dumps(source.describe(), sort_keys=True), "checksum": checksum(value)})

    atomic_write(path, write)
