"""Offline knowledge, computed once and cached in HDF5 beside the run.

The cache key hashes the teacher's weights, the dataset's content and the
source's settings, so a changed teacher or dataset never reuses a stale file.
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
from ..io import atomic_write
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
        return _read(path)
    distributed.init()
    rank, ranks = distributed.rank(), distributed.world_size()
    part = path.with_name(f"{path.stem}.shard{rank}of{ranks}.h5") if ranks > 1 else path
    if not part.is_file():  # a finished shard of an interrupted labelling is reused
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
            values = [v for v in map(_read, shards) if v is not None]
            _write(path, np.concatenate(values), key, teacher, dataset, source)
            for shard in shards:
                shard.unlink()
        distributed.barrier()
    return _read(path)


def _read(path: Path) -> np.ndarray | None:
    with h5py.File(path, "r") as f:
        return f["value"][()] if "value" in f else None  # an empty shard has no value


def _write(path: Path, value: np.ndarray | None, key: str, teacher: Teacher, dataset: Dataset,
           source: KnowledgeSource) -> None:
    def write(f) -> None:
        with h5py.File(f, "w") as h5:
            if value is not None:
                h5.create_dataset("value", data=value)
            h5.attrs.update({"key": key, "teacher": teacher.name, "dataset": dataset.source,
                             "settings": json.dumps(source.describe(), sort_keys=True)})

    atomic_write(path, write)
