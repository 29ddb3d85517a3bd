"""Readers for ANI-layout HDF5 (ANI-1x, ANI-1ccx, COMP6) and extxyz (through ase.io, periodic frames included).

``keys`` maps a kdframe label name to the key in the file, e.g.
``{"energy": "ccsd(t)_cbs.energy", "forces": "wb97x_dz.forces"}``. Energies become
eV and forces eV/Å: ANI files are in Hartree, extxyz files in eV (ASE's convention). With ``units: auto`` an ANI
file whose energies look like eV is refused (:func:`kdframe.data.ani_layout.check_hartree`). Every geometry is
checked: no molecule without atoms, finite coordinates, no two atoms (or periodic images) closer than 0.1 Å; ANI
atoms with atomic number 0 are padding, dropped with their labels (:func:`kdframe.data.ani_layout.molecule`).
ANI Hessians ``<method>.hessian`` (n_conf, 3N, 3N), Hartree/Å², become per-atom labels in eV/Å²
(layout of :mod:`kdframe.derivatives`), NaN-padded to the largest molecule of the file.
A ``stress`` label (extxyz only: ASE's Voigt 6 or a 3x3 / 9-value ``stress=`` key, eV/Å³, ASE's sign) becomes
(n_conf, 3, 3); a ``virials`` key (eV, as MACE's ``REF_virials``) becomes the stress label -W / V. Frames that
are not periodic in 3D have no volume, hence no stress: NaN (missing), whatever the file holds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from ase.stress import voigt_6_to_full_3x3_stress

from ..errors import DataError
from ..units import HARTREE_TO_EV
from ..derivatives import pack_hessians
from .dataset import Dataset, concat_labels
from .ani_layout import (check_geometries, check_hartree, checked_label, energy_ratios, molecule as ani_molecule,
                         molecule_groups, open_hdf5, real_numbers, unpad)
from .packed import PackedDataset, is_packed

HDF5_SUFFIXES = (".h5", ".hdf5")
XYZ_SUFFIXES = (".xyz", ".extxyz")
STRESS, VIRIALS = "stress", "virials"


def read_dataset(path: str | os.PathLike, keys: Mapping[str, str], units: str = "auto") -> Dataset | PackedDataset:
    """Read a dataset; every key in ``keys`` must exist in the file (NaN entries are allowed).

    A packed file (``kdframe data pack``) is opened lazily, in eV as packed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    if (STRESS in keys or VIRIALS in keys) and path.suffix.lower() not in XYZ_SUFFIXES:
        raise DataError(f"{path}: stress labels are read from extxyz files only (ANI and packed files hold "
                        "molecules, which have no stress); drop the stress key for this file")
    if path.suffix.lower() in HDF5_SUFFIXES and is_packed(path):
        if units == "hartree":
            raise DataError(f"{path}: a packed file is in eV and eV/Å (units: hartree applies to ANI files; use auto or ev)")
        return PackedDataset.open(path, keys)
    if path.suffix.lower() in HDF5_SUFFIXES:
        return _read_ani_hdf5(path, keys, units)
    if path.suffix.lower() in XYZ_SUFFIXES:
        return _read_extxyz(path, keys, HARTREE_TO_EV if units == "hartree" else 1.0)
    raise DataError(f"{path}: unknown data format (valid suffixes: {', '.join(HDF5_SUFFIXES + XYZ_SUFFIXES)})")


def _read_ani_hdf5(path: Path, keys: Mapping[str, str], units: str) -> Dataset:
    """ANI layout: Hartree unless ``units: ev``; with ``units: auto`` energies that look like eV are refused
    (:func:`~kdframe.data.ani_layout.check_hartree`)."""
    to_ev = 1.0 if units == "ev" else HARTREE_TO_EV
    species, positions, ptr, molecule, names = [], [], [0], [], []
    labels: dict[str, list[np.ndarray]] = {name: [] for name in keys}
    ratios: dict[str, list[np.ndarray]] = {}
    with open_hdf5(path, "ANI-layout or packed") as f:
        groups = molecule_groups(f)
        if not groups:
            raise DataError(f"{path}: no molecule groups with 'coordinates' and 'atomic_numbers' found")
        for name, group in groups:
            z, xyz, keep = ani_molecule(path, name, group)
            n_conf, n_padded = xyz.shape[0], group["coordinates"].shape[1]
            for label, key in keys.items():
                if key not in group:
                    available = sorted(k for k in group.keys() if k not in ("coordinates", "atomic_numbers", "species"))
                    raise DataError(f"{path}:/{name}: key {key!r} (for {label!r}) not found (available: {', '.join(available)})")
                raw = checked_label(f"{path}:/{name}/{key}", label, real_numbers(f"{path}:/{name}/{key}", label,
                                                                                  group[key][()]), n_conf, n_padded)
                if units == "auto" and (label == "energy" or key.endswith(("energy", "energies"))) and raw.ndim == 1:
                    ratios.setdefault(key, []).append(energy_ratios(raw, z))
                value = unpad(raw, keep, n_padded) * to_ev
                if value.shape[1:] == (3 * len(z), 3 * len(z)):  # a Hessian per conformation
                    labels[label].append(pack_hessians(list(value)))
                else:
                    labels[label].append(value.reshape(n_conf * len(z), *value.shape[2:]) if value.ndim >= 2 else value)
            species.append(np.tile(z, n_conf))
            positions.append(xyz.reshape(-1, 3))
            ptr.extend(ptr[-1] + len(z) * np.arange(1, n_conf + 1))
            molecule.append(np.full(n_conf, len(names)))
            names.append(name)
    for key, found in ratios.items():
        check_hartree(f"{path}: key {key!r} (units: auto)", np.concatenate(found))
    return Dataset(
        np.concatenate(species), np.concatenate(positions), np.asarray(ptr, dtype=np.int64),
        np.concatenate(molecule), names, {k: concat_labels(v) for k, v in labels.items()}, path.stem,
    )


def _read_extxyz(path: Path, keys: Mapping[str, str], to_ev: float) -> Dataset:
    import ase.io

    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as exc:  # noqa: BLE001 - ase raises many types for malformed files
        raise DataError(f"{path}: not a readable extxyz file ({exc.__class__.__name__}: {exc})") from None
    if not frames:
        raise DataError(f"{path}: no frames")
    labels: dict[str, list[np.ndarray]] = {STRESS if name == VIRIALS else name: [] for name in keys}
    names: list[str] = []
    molecule = []
    for i, atoms in enumerate(frames):
        _check_frame(path, i, atoms)
        formula = atoms.info.get("molecule", atoms.get_chemical_formula())
        if formula not in names:
            names.append(formula)
        molecule.append(names.index(formula))
        for label, key in keys.items():
            value = _stress(path, i, atoms, key) if label in (STRESS, VIRIALS) else _frame_value(path, i, atoms, key)
            if label == VIRIALS and atoms.pbc.all():  # W = -V sigma
                value = -value / abs(np.linalg.det(atoms.cell.array))
            if np.isinf(value).any():
                raise DataError(f"{path}: frame {i}: key {key!r} holds an infinite value (NaN marks a missing value; "
                                "a failed QC job?)")
            if label == "forces" and value.shape != (len(atoms), 3):
                raise DataError(f"{path}: frame {i}: key {key!r} has shape {value.shape}; forces are ({len(atoms)}, 3)")
            labels[STRESS if label == VIRIALS else label].append(value * to_ev)
    ptr = np.concatenate([[0], np.cumsum([len(a) for a in frames])])
    return Dataset(
        np.concatenate([a.numbers for a in frames]).astype(np.int64),
        np.concatenate([a.positions for a in frames]).astype(np.float64),
        ptr.astype(np.int64), np.asarray(molecule, dtype=np.int64), names,
        {k: (np.stack(v) if k == STRESS else np.concatenate(v) if v[0].ndim else np.asarray(v, dtype=np.float64))
         for k, v in labels.items()},
        path.stem, *_cells(path, frames),
    )


def _check_frame(path: Path, i: int, atoms) -> None:
    """Refuse a frame without atoms, with unknown elements, non-finite positions or two atoms (or images) closer
    than ``MIN_DISTANCE``."""
    from ase.neighborlist import neighbor_list

    from .ani_layout import MIN_DISTANCE

    where = f"{path}: frame {i}"
    if not len(atoms):
        raise DataError(f"{where}: no atoms (a configuration needs at least one atom; drop the frame)")
    bad = sorted(set(atoms.numbers[(atoms.numbers < 1) | (atoms.numbers > 118)].tolist()))
    if bad:
        raise DataError(f"{where}: atomic numbers {bad} (valid: 1-118; X and ghost atoms are not read)")
    if not np.isfinite(atoms.positions).all() or not atoms.pbc.any():
        check_geometries(where, atoms.numbers, atoms.positions[None], frame=True)
        return
    if (np.linalg.norm(atoms.cell.array, axis=1)[atoms.pbc] > 0).all():  # else _cells refuses the frame
        first, second, d = neighbor_list("ijd", atoms, MIN_DISTANCE)
        if len(d):
            k = int(np.argmin(d))
            a, b = int(first[k]), int(second[k])
            symbols = atoms.get_chemical_symbols()
            raise DataError(f"{where}: atoms {a} ({symbols[a]}) and {b} ({symbols[b]}) are {d[k]:.3g} Å apart"
                            f"{' (periodic images)' if a == b else ''} (valid: at least {MIN_DISTANCE} Å; drop the frame)")


def _cells(path: Path, frames) -> tuple[np.ndarray, np.ndarray]:
    """(cell, pbc) of every frame; a periodic direction needs a lattice vector (``Lattice=`` in the header)."""
    pbc = np.stack([np.asarray(a.pbc, dtype=bool) for a in frames])
    cell = np.stack([a.cell.array for a in frames]).astype(np.float64)
    flat = pbc & (np.linalg.norm(cell, axis=2) == 0)
    if flat.any():
        i, k = np.argwhere(flat)[0]
        raise DataError(f"{path}: frame {i}: periodic along lattice vector {k + 1} (pbc) but that vector is zero; "
                        "give the frame a Lattice=\"...\" with three non-zero vectors, or pbc=\"F F F\"")
    return cell, pbc


def _stress(path: Path, i: int, atoms, key: str) -> np.ndarray:
    """A frame's stress as 3x3; NaN for a frame not periodic in 3D (no volume, so no stress to learn)."""
    if not atoms.pbc.all():
        return np.full((3, 3), np.nan)
    value = _frame_value(path, i, atoms, key)
    if value.shape == (6,):
        return voigt_6_to_full_3x3_stress(value)
    if value.size == 9:
        return value.reshape(3, 3)
    raise DataError(f"{path}: frame {i}: stress (or virials) key {key!r} has shape {value.shape}; expected 6 "
                    "(Voigt: xx yy zz yz xz xy), 9 or 3x3 values")


def _frame_value(path: Path, i: int, atoms, key: str) -> np.ndarray:
    where = f"{path}: frame {i}: key {key!r}"
    if key in atoms.info:
        return real_numbers(where, key, atoms.info[key])
    if key in atoms.arrays:
        return real_numbers(where, key, atoms.arrays[key])
    calc = atoms.calc
    if calc is not None and key in getattr(calc, "results", {}):
        return real_numbers(where, key, calc.results[key])
    available = sorted(set(atoms.info) | set(atoms.arrays) | set(getattr(calc, "results", {}) if calc else ()))
    raise DataError(f"{path}: frame {i}: key {key!r} not found (available: {', '.join(available)})")
