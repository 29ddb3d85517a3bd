"""Seeded splits, by configuration or by molecule (no molecule then spans two splits).

The splits are cut in the canonical order train, valid, test (then any other names, sorted), whatever the order
of the keys in ``fractions``: a reformatted config gives the same split. Fractions must sum to one.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .dataset import Dataset


CANONICAL = ("train", "valid", "test")
TOLERANCE = 1e-6


def split(dataset: Dataset, fractions: dict[str, float], seed: int, by: str = "configuration") -> dict[str, np.ndarray]:
    """Configuration indices per named split (in canonical order); the fractions must sum to one (within 1e-6)."""
    names = [n for n in CANONICAL if n in fractions] + sorted(n for n in fractions if n not in CANONICAL)
    total = sum(fractions[n] for n in names)  # in canonical order too: the same float whatever the key order
    if abs(total - 1) > TOLERANCE or any(not f > 0 for f in fractions.values()):
        raise ConfigError("data.split.fractions", f"{dict(fractions)} sum to {total:.6g}",
                          "positive fractions that sum to 1, e.g. train 0.8, valid 0.1, test 0.1")
    rng = np.random.default_rng(seed)
    if by == "molecule":
        units = rng.permutation(len(dataset.molecule_names))
        members = [np.flatnonzero(dataset.molecule == m) for m in units]
    else:
        members = [np.array([c]) for c in rng.permutation(len(dataset))]
    sizes = np.array([len(m) for m in members])
    bounds = np.cumsum(sizes) / sizes.sum()
    out, start = {}, 0.0
    for k, name in enumerate(names):
        stop = start + fractions[name] / total
        take = (bounds > start + 1e-12) & (bounds <= stop + 1e-12) if k < len(names) - 1 else bounds > start + 1e-12
        picked = [m for m, t in zip(members, take) if t]
        out[name] = np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
        start = stop
    return out
