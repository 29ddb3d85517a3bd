"""Probe vectors for Hessian-vector products (methods.md §4).

One probe per configuration, shaped like its positions (n_i, 3) and of unit norm, so
``E[v vᵀ] = I / 3n_i`` for every kind: ``one_hot`` (a random atom-coordinate unit vector,
i.e. one Hessian column), ``rademacher`` (±1/√(3n_i)) or ``gaussian`` (normalised).
With unit probes the mean squared HVP error per component is an unbiased estimate of the
mean squared Hessian-element error (eV²/Å⁴), so E-F-HVP and E-F-H losses share a scale.

Regimes: ``fixed`` probes are a function of (seed, configuration index in the dataset),
so they can be stored as a label and their reference HVPs cached; ``fresh`` probes are
drawn anew for every minibatch from a generator the trainer seeds per epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pydantic
import torch

from .batch import Batch
from .data.dataset import Dataset

ProbeKind = Literal["one_hot", "rademacher", "gaussian"]
_FIXED, _FRESH = 0, 1  # separate random streams for the two regimes


class ProbeSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    kind: ProbeKind = "rademacher"
    regime: Literal["fixed", "fresh"] = "fixed"
    seed: int = 0


def draw(kind: ProbeKind, n_atoms: int, rng: np.random.Generator) -> np.ndarray:
    """One unit-norm probe (n_atoms, 3) of the given kind."""
    size = 3 * n_atoms
    if kind == "one_hot":
        v = np.zeros(size)
        v[rng.integers(size)] = 1.0
    elif kind == "rademacher":
        v = (2.0 * rng.integers(0, 2, size) - 1.0) / np.sqrt(size)
    elif kind == "gaussian":
        v = rng.standard_normal(size)
        v /= np.linalg.norm(v)
    else:
        raise ValueError(f"unknown probe kind {kind!r}")
    return v.reshape(n_atoms, 3)


def fixed_rng(settings: ProbeSettings, index: int) -> np.random.Generator:
    """The generator of configuration ``index``'s fixed probe."""
    return np.random.default_rng([settings.seed, _FIXED, int(index)])


def fresh_rng(settings: ProbeSettings, *key: int) -> np.random.Generator:
    """A generator for fresh probes, e.g. ``key = (trainer seed, epoch)`` so resumed runs draw the same."""
    return np.random.default_rng([settings.seed, _FRESH, *(int(k) for k in key)])


def _concat(kind: ProbeKind, counts: Sequence[int], rngs) -> np.ndarray:
    parts = [draw(kind, n, rng) for n, rng in zip(counts, rngs)]
    return np.concatenate(parts) if parts else np.zeros((0, 3))


def fixed_probes(dataset: Dataset, settings: ProbeSettings) -> np.ndarray:
    """(n_atoms, 3) fixed probes of every configuration of a dataset: a per-atom label."""
    return probes_of(dataset.n_atoms.tolist(), range(len(dataset.n_atoms)), settings)


def probes_of(counts: Sequence[int], indices: Sequence[int], settings: ProbeSettings) -> np.ndarray:
    """(sum(counts), 3) fixed probes of configurations of ``counts`` atoms whose indices are ``indices``."""
    return _concat(settings.kind, counts, (fixed_rng(settings, i) for i in indices))


def batch_probes(batch: Batch, settings: ProbeSettings, rng: np.random.Generator | None = None) -> torch.Tensor:
    """(n_atoms, 3) float64 probes for a batch (a label, like the fixed ones), on its device.

    Fresh probes come from ``rng``; without one (or for fixed probes) each configuration's
    probe is its fixed one, by ``batch.index``.
    """
    counts = batch.atoms_per_conf().tolist()
    if settings.regime == "fresh" and rng is not None:
        value = _concat(settings.kind, counts, [rng] * len(counts))
    else:
        if batch.index is None:
            raise ValueError("fixed probes need batch.index (the configurations' dataset indices)")
        value = _concat(settings.kind, counts, (fixed_rng(settings, i) for i in batch.index.tolist()))
    return torch.from_numpy(value).to(batch.positions.device)
