"""Seeded splits, by configuration or by molecule (no molecule then spans two splits)."""

from __future__ import annotations

import numpy as np

from .dataset import Dataset


def split(dataset: Dataset, fractions: dict[str, float], seed: int, by: str = "configuration") -> dict[str, np.ndarray]:
    """Configuration indices per named split; fractions are normalised to sum to one."""
    rng = np.random.default_rng(seed)
    total = sum(fractions.values())
    if by == "molecule":
        units = rng.permutation(len(dataset.molecule_names))
        members = [np.flatnonzero(dataset.molecule == m) for m in units]
    else:
        members = [np.array([c]) for c in rng.permutation(len(dataset))]
    sizes = np.array([len(m) for m in members])
    bounds = np.cumsum(sizes) / sizes.sum()
    out, start = {}, 0.0
    names = list(fractions)
    for k, name in enumerate(names):
        stop = start + fractions[name] / total
        take = (bounds > start + 1e-12) & (bounds <= stop + 1e-12) if k < len(names) - 1 else bounds > start + 1e-12
        picked = [m for m, t in zip(members, take) if t]
        out[name] = np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
        start = stop
    return out
