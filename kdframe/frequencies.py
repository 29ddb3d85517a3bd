"""Harmonic vibrational frequencies (cm-1) from Cartesian Hessians (eV/Å²), and their errors as a metric.

Frequencies are taken at the geometry the Hessian belongs to (the reference geometry; nothing is re-optimised),
the standard quick comparison. The Hessian is symmetrised, mass-weighted with ASE's atomic masses
(:data:`ase.data.atomic_masses`), and the rigid translations and rotations are projected out exactly: the
eigenvalues are those of the mass-weighted Hessian on the orthogonal complement of the (mass-weighted) translation
and rotation vectors, so 3N - 6 modes remain (3N - 5 for a linear geometry). Away from a minimum some modes can
have negative curvature; their imaginary frequencies are reported as negative numbers, so that the model's and the
reference's sorted frequencies can always be compared mode by mode.
"""

from __future__ import annotations

import numpy as np
from ase import units
from ase.data import atomic_masses

# sqrt(eV / (Å² amu)) -> cm-1, as ase.vibrations.VibrationsData converts: hbar * omega in eV, then / invcm.
_TO_CM1: float = units._hbar * units.m / np.sqrt(units._e * units._amu) / units.invcm
_RANK_TOL = 1e-8  # relative singular value below which a rigid motion is absent (the axial rotation of a line)


def rigid_motions(species: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Orthonormal basis (3N, 6 or 5, or 3 for one atom) of the mass-weighted translations and rotations."""
    masses = atomic_masses[np.asarray(species)]
    root = np.sqrt(masses)[:, None]
    centred = positions - (masses[:, None] * positions).sum(0) / masses.sum()
    axes = np.eye(3)
    vectors = [root * axes[a] for a in range(3)] + [root * np.cross(axes[a], centred) for a in range(3)]
    basis, singular, _ = np.linalg.svd(np.stack([v.ravel() for v in vectors], axis=1), full_matrices=False)
    return basis[:, singular > _RANK_TOL * singular[0]]


def harmonic_frequencies(hessian: np.ndarray, species: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Sorted harmonic frequencies (cm-1, imaginary ones negative) of one configuration.

    ``hessian``: (3N, 3N) or the per-atom block (N, 3, N, 3), eV/Å²; ``species``: (N,) atomic numbers;
    ``positions``: (N, 3) Å, used to project out translations and rotations (3N - 6 modes, 3N - 5 if linear).
    """
    n = len(species)
    hessian = np.asarray(hessian, dtype=np.float64).reshape(3 * n, 3 * n)
    if not np.isfinite(hessian).all():
        raise ValueError("harmonic_frequencies: the Hessian has missing (NaN) or infinite entries")
    weights = np.repeat(atomic_masses[np.asarray(species)] ** -0.5, 3)
    weighted = 0.5 * (hessian + hessian.T) * weights[:, None] * weights[None, :]
    rigid = rigid_motions(species, np.asarray(positions, dtype=np.float64))
    full, _, _ = np.linalg.svd(rigid, full_matrices=True)
    internal = full[:, rigid.shape[1]:]  # orthonormal complement of the rigid motions
    eigenvalues = np.linalg.eigvalsh(internal.T @ weighted @ internal)  # eV / (Å² amu), ascending
    return np.sign(eigenvalues) * np.sqrt(np.abs(eigenvalues)) * _TO_CM1


def frequency_pairs(reference: np.ndarray, predicted: np.ndarray, species: np.ndarray, positions: np.ndarray,
                    atom_ptr: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(reference, predicted) sorted frequencies of every configuration with a complete reference Hessian, all
    modes concatenated (cm-1), and how many configurations that is.

    ``reference``, ``predicted``: Hessians in the per-atom layout of :mod:`kdframe.derivatives`
    (A, 3, max_atoms, 3), eV/Å²; configuration c is atoms ``atom_ptr[c]:atom_ptr[c+1]``.
    """
    ref_out, pred_out = [], []
    for start, stop in zip(atom_ptr[:-1], atom_ptr[1:]):
        n = stop - start
        ref = reference[start:stop, :, :n]
        if n < 2 or np.isnan(ref).any():  # a missing Hessian; one atom has no vibrations
            continue
        z, xyz, pred = species[start:stop], positions[start:stop], predicted[start:stop, :, :n]
        ref_out.append(harmonic_frequencies(ref, z, xyz))
        pred_out.append(harmonic_frequencies(pred, z, xyz) if np.isfinite(pred).all()
                        else np.full_like(ref_out[-1], np.nan))  # a diverged model scores NaN, not an exception
    if not ref_out:
        return np.zeros(0), np.zeros(0), 0
    return np.concatenate(ref_out), np.concatenate(pred_out), len(ref_out)
