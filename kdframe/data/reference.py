"""Per-species reference energies by least squares on a training split."""

from __future__ import annotations

import numpy as np

from .dataset import Dataset


def fit_reference_energies(dataset: Dataset, energy_label: str) -> np.ndarray:
    """ref[Z] (eV) minimising sum_c (E_c - sum_Z n_cZ ref[Z])^2 over configurations with a label."""
    energy = dataset.labels[energy_label]
    known = ~np.isnan(energy)
    counts = dataset.element_counts()[known]
    present = np.flatnonzero(counts.sum(0) > 0)
    solution, *_ = np.linalg.lstsq(counts[:, present], energy[known], rcond=None)
    ref = np.zeros(counts.shape[1])
    ref[present] = solution
    return ref
