"""ANI-layout HDF5 (ANI-1x, ANI-1ccx, COMP6: one group per molecule): the helpers both readers share.

:mod:`kdframe.data.readers` reads such a file into memory and :mod:`kdframe.data.packed` packs it
group by group; both import these, neither imports the other's internals.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
from ase.data import atomic_numbers as SYMBOL_TO_Z

from ..errors import DataError


def open_hdf5(path: str | os.PathLike, layouts: str) -> h5py.File:
    """``path`` opened for reading, or a DataError that says which HDF5 layouts the caller reads."""
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"{path}: not a readable HDF5 file ({exc}); expected {layouts} HDF5") from None


def molecule_groups(f: h5py.File) -> list[tuple[str, h5py.Group]]:
    """Every group holding ``coordinates`` and atomic numbers, at any depth (COMP6 nests them)."""
    found: list[tuple[str, h5py.Group]] = []

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Group) and "coordinates" in obj and ("atomic_numbers" in obj or "species" in obj):
            found.append((name, obj))

    f.visititems(visit)
    return found


def molecule_species(group: h5py.Group) -> np.ndarray:
    """The atomic numbers of a molecule group (one row for all its conformations)."""
    key = "atomic_numbers" if "atomic_numbers" in group else "species"
    raw = group[key][()]
    if np.ndim(raw) != 1:
        raise DataError(f"{group.file.filename}:/{group.name.lstrip('/')}/{key}: shape {np.shape(raw)}, expected one "
                        "row of elements for the group's molecule (ANI-1x / ANI-1ccx / COMP6 layout); a file with a "
                        "row per conformation (ANI-2x layout) is not read: write it as extxyz through ase")
    if key == "atomic_numbers":
        return np.asarray(raw, dtype=np.int64)
    symbols = [s.decode() if isinstance(s, bytes) else str(s) for s in raw]
    return np.array([SYMBOL_TO_Z[s] for s in symbols], dtype=np.int64)


def checked_label(where: str, label: str, value: np.ndarray, n_conf: int, n_atoms: int) -> np.ndarray:
    """An ANI-layout label array, refused unless its shape fits ``label`` and it holds only numbers or NaN."""
    shapes = {"energy": [(n_conf,)], "forces": [(n_conf, n_atoms, 3)]}.get(
        label, [(n_conf,), (n_conf, n_atoms), (n_conf, n_atoms, 3), (n_conf, 3 * n_atoms, 3 * n_atoms)])
    if value.shape not in shapes:
        raise DataError(f"{where}: shape {value.shape} for {label!r}; expected {' or '.join(map(str, shapes))} "
                        f"({n_conf} conformations of {n_atoms} atoms)")
    bad = np.argwhere(np.isinf(value))
    if len(bad):
        raise DataError(f"{where}: infinite value at conformation {bad[0][0]} (NaN marks a missing value; a failed "
                        "QC job?)")
    return value
