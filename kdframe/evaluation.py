"""Errors of a model on a dataset: energies, per-atom energies, forces, stress, Hessians and conformer energy differences."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from . import derivatives
from .data.dataset import Dataset
from .potential import Ensemble, Potential, model_dtype
from .units import EV_TO_KCAL_MOL, shown_unit

CONFORMER_WINDOW_KCAL_MOL = 100.0  # conformers this far above their molecule's minimum are left out of dE


@dataclass
class Predictions:
    energy: np.ndarray  # (C,) eV
    forces: np.ndarray | None  # (A, 3) eV/Å
    hessian: np.ndarray | None = None  # (A, 3, width, 3) eV/Å², layout of kdframe.derivatives
    stress: np.ndarray | None = None  # (C, 3, 3) eV/Å³, NaN where not periodic in 3D


@dataclass
class Metrics:
    values: dict[str, float] = field(default_factory=dict)
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # reference, predicted


def predict(model: Potential | Ensemble, dataset: Dataset, head: int = 0, forces: bool = True,
            batch_size: int = 128, device: str | torch.device = "cpu", hessian_width: int | None = None,
            stress: bool = False) -> Predictions:
    """Energies, forces and stress if asked and, given ``hessian_width``, full Hessians (small molecules only)."""
    model.eval()
    dtype = model_dtype(model)
    forces = forces or hessian_width is not None
    energies, force_chunks, hessians, stresses = [], [], [], []
    for batch in dataset.batches(batch_size, labels=()):
        batch = batch.to(device, dtype)
        with torch.enable_grad() if forces or stress else torch.no_grad():
            out = model(batch, forces=forces, create_graph=hessian_width is not None, stress=stress)
            if hessian_width is not None:
                full = derivatives.hessian(out["forces"][..., head], batch, False, max_atoms=hessian_width)
                hessians.append(full.detach().cpu().double().numpy())
        energies.append(out["energy"][:, head].detach().cpu().double().numpy())
        if forces:
            force_chunks.append(out["forces"][..., head].detach().cpu().double().numpy())
        if stress:
            stresses.append(out["stress"][..., head].detach().cpu().numpy())
    return Predictions(np.concatenate(energies), np.concatenate(force_chunks) if forces else None,
                       np.concatenate(hessians) if hessians else None, np.concatenate(stresses) if stress else None)


def conformer_pairs(dataset: Dataset, reference: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All within-molecule pairwise energy differences (reference, predicted), excluding high conformers."""
    ref_pairs, pred_pairs = [], []
    for m in np.unique(dataset.molecule):
        idx = np.flatnonzero((dataset.molecule == m) & ~np.isnan(reference))
        if len(idx) < 2:  # also a molecule whose labels are all missing (partly labelled fidelities)
            continue
        idx = idx[(reference[idx] - reference[idx].min()) * EV_TO_KCAL_MOL <= CONFORMER_WINDOW_KCAL_MOL]
        if len(idx) < 2:
            continue
        i, j = np.triu_indices(len(idx), k=1)
        ref_pairs.append(reference[idx][i] - reference[idx][j])
        pred_pairs.append(predicted[idx][i] - predicted[idx][j])
    if not ref_pairs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(ref_pairs), np.concatenate(pred_pairs)


def _errors(prefix: str, reference: np.ndarray, predicted: np.ndarray, unit: str, out: Metrics) -> None:
    """RMSE and MAE in ``unit`` (eV-based) and in the unit tables show (:func:`~kdframe.units.shown_unit`)."""
    keep = ~np.isnan(reference).reshape(len(reference), -1).any(axis=1)
    ref, pred = reference[keep], predicted[keep]
    out.pairs[prefix] = (ref, pred)
    if ref.size == 0:
        return
    err = pred - ref
    shown, factor = shown_unit(prefix)
    for name, value in (("rmse", np.sqrt(np.mean(err**2))), ("mae", np.mean(np.abs(err)))):
        out.values[f"{prefix} {name} ({unit})"] = float(value)
        out.values[f"{prefix} {name} ({shown})"] = float(value * factor)


def evaluate(model: Potential | Ensemble, dataset: Dataset, energy_label: str | None = "energy",
             forces_label: str | None = None, head: int = 0, device: str | torch.device = "cpu",
             hessian_label: str | None = None, stress_label: str | None = None) -> Metrics:
    """Energy, per-atom energy, dE and (if their labels are given) force, Hessian-element and stress errors, in eV
    and kcal/mol (stress: eV/Å³ and GPa)."""
    width = dataset.labels[hessian_label].shape[2] if hessian_label is not None else None
    pred = predict(model, dataset, head, forces=forces_label is not None, device=device, hessian_width=width,
                   stress=stress_label is not None)
    out = Metrics()
    if energy_label is not None:
        ref = dataset.labels[energy_label]
        _errors("E", ref, pred.energy, "eV", out)
        _errors("E/atom", ref / dataset.n_atoms, pred.energy / dataset.n_atoms, "eV", out)
        _errors("dE", *conformer_pairs(dataset, ref, pred.energy), "eV", out)
    if forces_label is not None:
        _errors("F", dataset.labels[forces_label], pred.forces, "eV/Å", out)
    if hessian_label is not None:
        ref = dataset.labels[hessian_label]
        inside = ~np.isnan(ref)  # padding past a configuration's atoms, and missing Hessians, are NaN
        _errors("H", ref[inside], pred.hessian[inside], "eV/Å²", out)
    if stress_label is not None:
        _errors("S", dataset.labels[stress_label], pred.stress, "eV/Å³", out)
    return out
