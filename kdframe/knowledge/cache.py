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
    """The source's label for every configuration, from cache when nothing changed."""
    key = cache_key(source, teacher, dataset)
    path = Path(cache_dir) / f"{source.name}-{source.label}-{key}.h5"
    if path.is_file():
        with h5py.File(path, "r") as f:
            return f["value"][()]
    dtype = model_dtype(teacher.model)
    teacher.model.to(device)
    chunks = []
    for batch in tqdm(dataset.batches(batch_size, labels=()), desc=f"{source.name} from {teacher.name}",
                      total=-(-len(dataset) // batch_size), leave=False, disable=not progress):
        chunks.append(source.compute(teacher, batch.to(device, dtype)).cpu().double().numpy())
    value = np.concatenate(chunks)

    def write(f) -> None:
        with h5py.File(f, "w") as h5:
            h5.create_dataset("value", data=value)
            h5.attrs.update({"key": key, "teacher": teacher.name, "dataset": dataset.source,
                             "settings": json.dumps(source.describe(), sort_keys=True)})

    atomic_write(path, write)
    return value
