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


LABEL_ENDINGS = ("energy", "energies", "forces", "hessian")
MIN_DISTANCE = 0.1  # Å: two atoms closer than this are one atom given twice (NaN forces), never a geometry
_PAIR_CHUNK = 1 << 20  # pair distances computed at once when checking geometries (~24 MB)


def molecule_groups(f: h5py.File) -> list[tuple[str, h5py.Group]]:
    """Every group holding ``coordinates`` and atomic numbers, at any depth (COMP6 nests them).

    A group that holds only one of the two, or labels without either (a misspelt key), is refused rather
    than dropped without a word.
    """
    found: list[tuple[str, h5py.Group]] = []

    def visit(name: str, obj) -> None:
        if not isinstance(obj, h5py.Group):
            return
        has_xyz, has_z = "coordinates" in obj, "atomic_numbers" in obj or "species" in obj
        if has_xyz and has_z:
            found.append((name, obj))
        elif has_xyz or has_z or any(isinstance(v, h5py.Dataset) and k.endswith(LABEL_ENDINGS) for k, v in obj.items()):
            missing = "'atomic_numbers' (or 'species')" if has_xyz else "'coordinates'"
            raise DataError(f"{f.filename}:/{name}: no {missing} key (keys: {', '.join(sorted(obj))}) (valid: every "
                            "molecule group holds 'coordinates' and 'atomic_numbers' or 'species')")

    f.visititems(visit)
    return found


def molecule_species(group: h5py.Group) -> np.ndarray:
    """The atomic numbers of a molecule group (one row for all its conformations; 0 marks a padding atom)."""
    key = "atomic_numbers" if "atomic_numbers" in group else "species"
    where = f"{group.file.filename}:/{group.name.lstrip('/')}/{key}"
    raw = group[key][()]
    if np.ndim(raw) != 1:
        raise DataError(f"{where}: shape {np.shape(raw)}, expected one "
                        "row of elements for the group's molecule (ANI-1x / ANI-1ccx / COMP6 layout); a file with a "
                        "row per conformation (ANI-2x layout) is not read: write it as extxyz through ase")
    if key == "atomic_numbers":
        z = np.asarray(raw, dtype=np.int64)
    else:
        symbols = [s.decode() if isinstance(s, bytes) else str(s) for s in raw]
        unknown = sorted({s for s in symbols if s and s not in SYMBOL_TO_Z})
        if unknown:
            raise DataError(f"{where}: unknown element symbols {unknown} (valid: H, He, ..., Og; '' for padding)")
        z = np.array([SYMBOL_TO_Z[s] if s else 0 for s in symbols], dtype=np.int64)
    bad = sorted(set(z[(z < 0) | (z > 118)].tolist()))
    if bad:
        raise DataError(f"{where}: atomic numbers {bad} (valid: 1-118, 0 for padding)")
    return z


def molecule(path: str | os.PathLike, name: str, group: h5py.Group) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(atomic numbers, coordinates (n_conf, n, 3) Å, ``keep``) of a molecule group, checked.

    Atoms with atomic number 0 are padding (ANI-2x style, a molecule padded to a common width): dropped here,
    and by :func:`unpad` from every per-atom label (``keep`` is their mask, None when there are none). A molecule
    without atoms, non-finite coordinates and two atoms closer than ``MIN_DISTANCE`` are refused.
    """
    padded = molecule_species(group)
    xyz = np.asarray(group["coordinates"][()], dtype=np.float64)
    if xyz.ndim != 3 or xyz.shape[1:] != (len(padded), 3):
        raise DataError(f"{path}:/{name}/coordinates: shape {xyz.shape}, expected (n_conf, {len(padded)}, 3)")
    keep = None if padded.all() else padded != 0
    z = padded if keep is None else padded[keep]
    if not len(z):
        held = "'atomic_numbers' is empty" if not len(padded) else f"all {len(padded)} atomic numbers are 0 (padding)"
        raise DataError(f"{path}:/{name}: a molecule without atoms: {held} (valid: at least one atom; drop the group)")
    xyz = unpad(xyz, keep, len(padded))
    check_geometries(f"{path}:/{name}", z, xyz)
    return z, xyz, keep


def unpad(value: np.ndarray, keep: np.ndarray | None, n_padded: int) -> np.ndarray:
    """A label (or coordinates) of a padded molecule without its padding atoms (Hessians: their rows and columns)."""
    if keep is None or value.ndim < 2:
        return value
    if value.shape[1] == n_padded:
        return value[:, keep]
    if value.shape[1] == 3 * n_padded:
        rows = np.repeat(keep, 3)
        return value[:, rows][:, :, rows]
    return value


def check_geometries(where: str, z: np.ndarray, xyz: np.ndarray, first: int = 0, frame: bool = False) -> None:
    """Refuse conformations (n_conf, n, 3) with non-finite coordinates or two atoms closer than ``MIN_DISTANCE``.

    ``where`` names the molecule; conformations are numbered from ``first``. ``frame``: ``where`` names one frame
    (extxyz), ``xyz`` holds only it.
    """
    def at(c: int) -> str:
        return where if frame else f"{where}: conformation {first + c}"

    drop = "frame" if frame else "conformation"
    from ase.data import chemical_symbols

    bad = np.argwhere(~np.isfinite(xyz).all(axis=2))
    if len(bad):
        c, a = bad[0]
        raise DataError(f"{at(c)}: coordinates of atom {a} are [{', '.join(f'{x:.4g}' for x in xyz[c, a])}] "
                        f"(valid: finite positions in Å; drop the {drop})")
    n = xyz.shape[1]
    if n < 2:
        return
    step = max(1, _PAIR_CHUNK // (n * n))
    diagonal = np.arange(n)
    for start in range(0, len(xyz), step):
        block = xyz[start:start + step] - xyz[start:start + step].mean(axis=1, keepdims=True)
        sq = (block * block).sum(-1)
        d2 = sq[:, :, None] + sq[:, None, :] - 2 * np.matmul(block, block.transpose(0, 2, 1))  # fast; exact below
        d2[:, diagonal, diagonal] = np.inf
        for c in np.flatnonzero(d2.min(axis=(1, 2)) < 1.1 * MIN_DISTANCE ** 2):
            exact = np.linalg.norm(block[c, :, None] - block[c, None, :], axis=-1)
            exact[diagonal, diagonal] = np.inf
            close = np.argwhere(exact < MIN_DISTANCE)
            if len(close):
                i, j = close[0]
                raise DataError(f"{at(start + c)}: atoms {i} ({chemical_symbols[z[i]]}) and {j} "
                                f"({chemical_symbols[z[j]]}) are {exact[i, j]:.3g} Å apart (valid: at least "
                                f"{MIN_DISTANCE} Å; drop the {drop})")


def free_atom_energy(z: np.ndarray) -> np.ndarray:
    """Approximate all-electron total energy (Hartree) of free atoms of atomic numbers ``z``.

    Thomas-Fermi with Scott and Schwinger corrections: within a few per cent of Hartree-Fock for every element
    (H -0.54, C -37.7, O -75.0, Cl -459), which is all the unit check below needs.
    """
    z = np.asarray(z, dtype=np.float64)
    return -0.7687 * z ** (7 / 3) + 0.5 * z ** 2 - 0.2699 * z ** (5 / 3)


#: ``units: auto`` reads ANI energies as Hartree. Read so, all-electron totals are about 1.0 times the free
#: atoms' total energies (binding and correlation are ~1%), valence-only or semi-empirical totals (xTB) ~0.05-0.2,
#: relative energies ~0; eV totals are 27.2 times that: ~27 (all-electron) or ~1.4-5 (xTB). A median ratio
#: above ``EV_RATIO`` is eV; one in (``HARTREE_RATIO``, ``EV_RATIO``] cannot be told apart: refused, asking for units.
HARTREE_RATIO, EV_RATIO = 1.3, 5.0


def energy_ratios(energy: np.ndarray, z: np.ndarray) -> np.ndarray:
    """|E| / |sum of the free atoms' energies| of each labelled conformation of one molecule (E read as Hartree)."""
    energy = np.asarray(energy, dtype=np.float64)
    return np.abs(energy[np.isfinite(energy)]) / abs(free_atom_energy(z).sum())


def check_hartree(where: str, ratios: np.ndarray) -> None:
    """Refuse energies that ``units: auto`` would read as Hartree but that look like eV (see ``EV_RATIO``)."""
    if not len(ratios):
        return
    r = float(np.median(ratios))
    if r > EV_RATIO:
        raise DataError(f"{where}: energies read as Hartree would be {r:.1f} times the free atoms' total energy; "
                        "they look like eV (valid: set units: ev for this file, or units: hartree if they are Hartree)")
    if r > HARTREE_RATIO:
        raise DataError(f"{where}: energies read as Hartree would be {r:.2f} times the free atoms' total energy: "
                        "cannot tell Hartree from eV (valid: set units: hartree or units: ev for this file)")


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


def real_numbers(where: str, label: str, value) -> np.ndarray:
    """``value`` as float64; text, complex numbers or other non-numbers are refused, not parsed or cut."""
    value = np.asarray(value)
    if value.dtype.kind not in "iuf":
        shown = value.reshape(-1)[0].tolist() if value.size else value.dtype
        raise DataError(f"{where}: {label!r} holds {value.dtype} values such as {shown!r} (valid: real numbers, "
                        "NaN for a missing one)")
    return value.astype(np.float64)
