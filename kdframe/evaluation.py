"""Errors of a model on a dataset: energies, per-atom energies, forces, stress, Hessians, harmonic frequencies
(:mod:`kdframe.frequencies`) and conformer energy differences; for an ensemble also the members' spread; optionally
energies after an in-sample per-element offset refit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from . import derivatives
from .data.dataset import Dataset
from .data.reference import fit_reference_energies
from .frequencies import frequency_pairs
from .potential import Ensemble, Potential, model_dtype
from .units import EV_TO_KCAL_MOL, shown_unit

CONFORMER_WINDOW_KCAL_MOL = 100.0  # conformers this far above their molecule's minimum are left out of dE
REFIT = "E (offsets refit)"  # metric prefix of energies after the per-element offset refit
FREQUENCY_NOTE = ("Both Hessians are taken at the reference geometry (not re-optimised), mass-weighted, with "
                  "translations and rotations projected out (3N-6 modes, 3N-5 if linear); imaginary frequencies count "
                  "as negative.")
FREQ = "freq"  # metric prefix of harmonic frequencies (cm-1) at the reference geometries, from Hessian labels


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


def conformer_pair_indices(dataset: Dataset, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows (i, j) of every within-molecule pair of labelled conformers, excluding high conformers."""
    first, second = [], []
    for m in np.unique(dataset.molecule):
        idx = np.flatnonzero((dataset.molecule == m) & ~np.isnan(reference))
        if len(idx) < 2:  # also a molecule whose labels are all missing (partly labelled fidelities)
            continue
        idx = idx[(reference[idx] - reference[idx].min()) * EV_TO_KCAL_MOL <= CONFORMER_WINDOW_KCAL_MOL]
        i, j = np.triu_indices(len(idx), k=1)
        first.append(idx[i])
        second.append(idx[j])
    if not first:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(first), np.concatenate(second)


def conformer_pairs(dataset: Dataset, reference: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All within-molecule pairwise energy differences (reference, predicted), excluding high conformers."""
    i, j = conformer_pair_indices(dataset, reference)
    return reference[i] - reference[j], predicted[i] - predicted[j]


def _errors(prefix: str, reference: np.ndarray, predicted: np.ndarray, unit: str, out: Metrics) -> None:
    """RMSE and MAE in ``unit`` (eV-based) and in the unit tables show (:func:`~kdframe.units.shown_unit`)."""
    if reference.size == 0:  # e.g. dE of a set with one conformer per molecule
        out.pairs[prefix] = (reference, predicted)
        return
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


def refit_offsets(dataset: Dataset, reference: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-element offsets (eV, indexed by Z) fitted by least squares to ``reference - predicted`` over the labelled
    configurations, and the predictions with them added (an in-sample fit: it sees the labels it is scored on)."""
    offsets = fit_reference_energies(dataset.with_labels(residual=reference - predicted), "residual")
    return offsets, predicted + dataset.element_counts() @ offsets


def mean_predictions(members: Sequence[Predictions]) -> Predictions:
    """The ensemble mean: energies, forces (the mean's forces are the mean of the forces), Hessians and stress."""
    def mean(name: str) -> np.ndarray | None:
        values = [getattr(p, name) for p in members]
        return None if values[0] is None else np.mean(values, axis=0)

    return Predictions(mean("energy"), mean("forces"), mean("hessian"), mean("stress"))


def ensemble_spread(members: Sequence[Predictions]) -> dict[str, float]:
    """Members' disagreement: per-configuration std (ddof 0) of their energies, mean over the set (eV); per-atom
    RMS length of the members' force deviations from the mean, ``sqrt(mean_k |F_k - F|^2)``, mean over atoms (eV/Å)."""
    out = {}
    energies = np.stack([p.energy for p in members])
    for unit, factor in (("eV", 1.0), ("kcal/mol", EV_TO_KCAL_MOL)):
        out[f"E spread ({unit})"] = float(energies.std(axis=0).mean() * factor)
    if members[0].forces is not None and len(members[0].forces):
        forces = np.stack([p.forces for p in members])
        per_atom = np.sqrt(((forces - forces.mean(0)) ** 2).sum(-1).mean(0))
        for unit, factor in (("eV/Å", 1.0), ("kcal/mol/Å", EV_TO_KCAL_MOL)):
            out[f"F spread ({unit})"] = float(per_atom.mean() * factor)
    return out


def metrics_of(pred: Predictions, dataset: Dataset, energy_label: str | None = "energy",
               forces_label: str | None = None, hessian_label: str | None = None, stress_label: str | None = None,
               refit: bool = False) -> Metrics:
    """Errors of given predictions; ``refit`` adds :data:`REFIT` errors after :func:`refit_offsets`; a Hessian label
    adds Hessian-element errors and :data:`FREQ` errors (cm-1) of the sorted harmonic frequencies of every
    configuration with a reference Hessian, at the reference geometry (:mod:`kdframe.frequencies`)."""
    out = Metrics()
    if energy_label is not None:
        ref = dataset.labels[energy_label]
        _errors("E", ref, pred.energy, "eV", out)
        _errors("E/atom", ref / dataset.n_atoms, pred.energy / dataset.n_atoms, "eV", out)
        _errors("dE", *conformer_pairs(dataset, ref, pred.energy), "eV", out)
        if refit and bool((~np.isnan(ref)).any()):
            offsets, corrected = refit_offsets(dataset, ref, pred.energy)
            _errors(REFIT, ref, corrected, "eV", out)
            out.values["offsets refit: elements"] = float(np.count_nonzero(dataset.element_counts()[~np.isnan(ref)]
                                                                           .sum(0)))
            out.values["offsets refit: configurations"] = float(np.count_nonzero(~np.isnan(ref)))
            for z in np.flatnonzero(offsets):
                out.values[f"offset Z={z} (eV)"] = float(offsets[z])
    if forces_label is not None:
        _errors("F", dataset.labels[forces_label], pred.forces, "eV/Å", out)
    if hessian_label is not None:
        ref = dataset.labels[hessian_label]
        inside = ~np.isnan(ref)  # padding past a configuration's atoms, and missing Hessians, are NaN
        _errors("H", ref[inside], pred.hessian[inside], "eV/Å²", out)
        ptr = np.concatenate([[0], np.cumsum(dataset.n_atoms)])
        *freqs, n_conf = frequency_pairs(ref, pred.hessian, dataset.species, dataset.positions, ptr)
        _errors(FREQ, *freqs, "cm-1", out)
        if n_conf:
            out.values[f"{FREQ}: configurations"] = float(n_conf)
            out.values[f"{FREQ}: modes"] = float(freqs[0].size)
    if stress_label is not None:
        _errors("S", dataset.labels[stress_label], pred.stress, "eV/Å³", out)
    return out


def evaluate(model: Potential | Ensemble, dataset: Dataset, energy_label: str | None = "energy",
             forces_label: str | None = None, head: int = 0, device: str | torch.device = "cpu",
             hessian_label: str | None = None, stress_label: str | None = None, refit: bool = False) -> Metrics:
    """Energy, per-atom energy, dE and (if their labels are given) force, Hessian-element, harmonic-frequency and
    stress errors, in eV and kcal/mol (frequencies: cm-1; stress: eV/Å³ and GPa); ``refit``: also energies after an
    in-sample per-element offset refit."""
    width = dataset.labels[hessian_label].shape[2] if hessian_label is not None else None
    pred = predict(model, dataset, head, forces=forces_label is not None, device=device, hessian_width=width,
                   stress=stress_label is not None)
    return metrics_of(pred, dataset, energy_label, forces_label, hessian_label, stress_label, refit)


def evaluate_ensemble(members: Sequence[Potential], dataset: Dataset, energy_label: str | None = "energy",
                      forces_label: str | None = None, head: int = 0, device: str | torch.device = "cpu",
                      stress_label: str | None = None, refit: bool = False,
                      hessian_label: str | None = None) -> Metrics:
    """Errors of the members' mean (as :class:`~kdframe.potential.Ensemble` predicts; Hessians and frequencies from
    the mean Hessian) plus the members' spread (:func:`ensemble_spread`: ``E spread``, ``F spread`` when forces are
    evaluated)."""
    width = dataset.labels[hessian_label].shape[2] if hessian_label is not None else None
    preds = [predict(m, dataset, head, forces=forces_label is not None, device=device, hessian_width=width,
                     stress=stress_label is not None) for m in members]
    out = metrics_of(mean_predictions(preds), dataset, energy_label, forces_label, hessian_label, stress_label, refit)
    out.values.update(ensemble_spread(preds))
    return out


def summary_markdown(name: str, metrics: Metrics) -> str:
    """Markdown for what the run table has no column for: raw energy errors beside those after the offset refit,
    the ensemble spread, and how the frequency errors were taken (each only if present), kcal/mol-based."""
    v = metrics.values
    lines = []
    if f"{REFIT} rmse (kcal/mol)" in v:
        cells = [v.get(f"{q} (kcal/mol)", float("nan")) for q in ("E rmse", "E mae", f"{REFIT} rmse", f"{REFIT} mae")]
        lines += ["| model | E rmse | E mae | E (offsets refit) rmse | E (offsets refit) mae |", "|---|---|---|---|---|",
                  f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |", "",
                  f"E (offsets refit), kcal/mol: one energy offset per element fitted by least squares to label minus "
                  f"prediction on this same set ({int(v['offsets refit: elements'])} offsets, "
                  f"{int(v['offsets refit: configurations'])} configurations), then removed. It is an in-sample fit: "
                  "it hides a constant per-element shift between levels of theory (and any error that looks like one), "
                  "so it is an optimistic estimate; the raw E columns are kept beside it.", ""]
    if "E spread (kcal/mol)" in v:
        text = (f"Ensemble spread: members' energy std {v['E spread (kcal/mol)']:.3f} kcal/mol "
                "(per configuration, mean over the set)")
        if "F spread (kcal/mol/Å)" in v:
            text += (f"; members' force deviation {v['F spread (kcal/mol/Å)']:.3f} kcal/mol/Å "
                     "(per atom, mean over atoms)")
        lines += [text + ".", ""]
    if f"{FREQ}: configurations" in v:
        lines += [f"Harmonic frequencies (freq): RMSE {v[f'{FREQ} rmse (cm-1)']:.1f} cm-1, MAE "
                  f"{v[f'{FREQ} mae (cm-1)']:.1f} cm-1 over {int(v[f'{FREQ}: modes'])} modes of "
                  f"{int(v[f'{FREQ}: configurations'])} configurations with a reference Hessian, sorted frequencies "
                  f"compared mode by mode. {FREQUENCY_NOTE}", ""]
    return "\n".join(lines)
