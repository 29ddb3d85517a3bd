"""Packed datasets: one flat, chunked HDF5 file read lazily, for data larger than memory.

``kdframe data pack SRC DST`` turns an ANI-layout file (one group per molecule) into this layout,
one group at a time, so neither step ever holds the whole dataset:

- per configuration, in memory when opened (a few tens of bytes each): ``atom_ptr`` (C+1),
  ``molecule`` (C), the element counts, every per-configuration label (energies, eV) and, for every
  per-atom label, whether a configuration has it;
- per atom, on disk and read in blocks of ``BLOCK_CONFS`` configurations: ``species``,
  ``positions`` (Å) and the per-atom labels (forces, eV/Å, three values per atom; atom energies, eV, one;
  NaN = missing).

Format 2 (``kdframe-packed-2``) adds, per configuration and only when some configuration has them:
``cell`` (C, 3, 3) Å (rows are lattice vectors; zeros for an open configuration) with ``pbc`` (C, 3) bool,
and an origin (how the configuration was made, e.g. ``conf``, ``rattle:0.1``, ``box:0.95``) as ``origin``
(C,) int32 codes into the string table ``origins``. Files of format 1 (no cells, no origins) are still read.

Shuffled epochs are block-shuffled, as streaming loaders do (webdataset, tf.data shuffle buffers):
the order of the blocks is shuffled, then the configurations of each window of ``WINDOW`` blocks,
so a batch touches only the blocks of (at most two) windows and at most ``2 * WINDOW`` blocks are held
in memory, whatever the file size. Hessian labels are not packed.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from ..batch import Batch
from ..errors import DataError
from ..units import HARTREE_TO_EV
from .ani_layout import (check_hartree, checked_label, energy_ratios, molecule as ani_molecule, molecule_groups,
                         molecule_species, open_hdf5, real_numbers, unpad)
from .dataset import PER_ATOM, PER_CONF, Batching, atom_ranges

FORMAT = "kdframe-packed-2"
FORMATS = ("kdframe-packed-1", FORMAT)  # read; FORMAT is written
BLOCK_CONFS, WINDOW = 1024, 8
CHUNK_ATOMS = 1 << 15
SKIPPED = ("coordinates", "atomic_numbers", "species")
CONVERTED = ("energy", "energies", "forces")  # key endings converted to eV; others (e.g. t1_diagnostic) kept as they are


def in_energy_units(key: str) -> bool:
    """Whether a key holds energies or forces (Hartree in ANI files, so converted): ``*.energy``, ``*.forces``, their
    spreads ``*_std`` and per-atom spreads ``*_std_atoms``."""
    return key.removesuffix("_atoms").removesuffix("_std").endswith(CONVERTED)


def is_packed(path: str | os.PathLike) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") in FORMATS
    except OSError:
        return False


class PackedWriter:
    """Appends molecules to a packed file; the file appears (atomically renamed) on :meth:`close`.

    ``attrs``: extra file attributes (strings or numbers, e.g. provenance), written on :meth:`close`.
    ``atom_shapes``: the values per atom of a per-atom label, e.g. ``()`` for atom energies (default ``(3,)``).
    Configurations added under a name already added belong to that molecule (one index per name).
    """

    def __init__(self, path: str | os.PathLike, label_kinds: Mapping[str, str], source: str = "",
                 attrs: Mapping[str, object] | None = None, atom_shapes: Mapping[str, tuple[int, ...]] | None = None):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = h5py.File(self.tmp, "w")
        self.kinds = dict(label_kinds)
        self.source = source or self.path.stem
        self.hash = hashlib.sha256()
        self.counts: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
        self.molecule: list[np.ndarray] = []
        self.names: list[str] = []
        self.name_index: dict[str, int] = {}
        self.attrs = dict(attrs or {})
        self.cells: list[np.ndarray] = []  # (k, 3, 3) per add
        self.pbcs: list[np.ndarray] = []  # (k, 3) per add
        self.origin_codes: list[np.ndarray] = []
        self.origin_table: dict[str, int] = {}
        self.conf_labels: dict[str, list[np.ndarray]] = {k: [] for k, kind in self.kinds.items() if kind == PER_CONF}
        self.present: dict[str, list[np.ndarray]] = {k: [] for k, kind in self.kinds.items() if kind == PER_ATOM}
        self.atom_shapes = {name: tuple((atom_shapes or {}).get(name, (3,))) for name in self.present}
        self.elements: list[np.ndarray] = []
        self.file.create_group("labels")
        self._growing("species", (), np.int16)
        self._growing("positions", (3,), np.float64)
        for name, shape in self.atom_shapes.items():
            self._growing(f"labels/{name}", shape, np.float64)

    def _growing(self, name: str, tail: tuple[int, ...], dtype) -> None:
        self.file.create_dataset(name, shape=(0, *tail), maxshape=(None, *tail), dtype=dtype,
                                 chunks=(CHUNK_ATOMS, *tail))

    def _append(self, name: str, rows: np.ndarray) -> None:
        data = self.file[name]
        start = data.shape[0]
        data.resize(start + len(rows), axis=0)
        data[start:] = rows
        self.hash.update(name.encode())
        self.hash.update(np.ascontiguousarray(rows).tobytes())

    def add(self, name: str, species: np.ndarray, positions: np.ndarray, labels: Mapping[str, np.ndarray],
            cell: np.ndarray | None = None, pbc: np.ndarray | None = None,
            origin: str | Sequence[str] | None = None) -> None:
        """One molecule: ``species`` (n,), ``positions`` (k, n, 3) Å, labels (k,) eV or per atom (k, n, 3) eV/Å
        (``atom_shapes``: (k, n, *shape)), NaN = missing.

        ``cell``: (3, 3) or (k, 3, 3) Å, rows are lattice vectors, with ``pbc`` (3,) or (k, 3) bool (default all
        True with a cell); none: open (molecular) configurations. ``origin``: one string for the k configurations,
        or one each (e.g. ``"rattle:0.1"``).
        """
        positions = np.asarray(positions, dtype=np.float64)
        k, n = positions.shape[:2]
        cells, pbcs = _cells_of(k, cell, pbc)
        if pbcs.any():
            self.hash.update(b"cell")
            self.hash.update(cells.tobytes())
            self.hash.update(pbcs.tobytes())
        self.cells.append(cells)
        self.pbcs.append(pbcs)
        if origin is not None:
            origins = [origin] * k if isinstance(origin, str) else list(origin)
            if len(origins) != k:
                raise ValueError(f"{name}: {len(origins)} origins for {k} configurations")
            codes = np.array([self.origin_table.setdefault(o, len(self.origin_table)) for o in origins], dtype=np.int32)
            self.hash.update(("origin:" + "\n".join(origins)).encode())
        else:
            codes = np.full(k, -1, dtype=np.int32)
        self.origin_codes.append(codes)
        self._append("species", np.tile(species, k).astype(np.int16))
        self._append("positions", positions.reshape(-1, 3))
        for label, kind in self.kinds.items():
            value = labels.get(label)
            if kind == PER_CONF:
                value = np.full(k, np.nan) if value is None else np.asarray(value, dtype=np.float64)
                self.conf_labels[label].append(value)
                self.hash.update(value.tobytes())
            else:
                shape = self.atom_shapes[label]
                value = np.full((k, n, *shape), np.nan) if value is None else np.asarray(value, dtype=np.float64)
                if value.shape != (k, n, *shape):
                    raise ValueError(f"{name}: label {label!r} has shape {value.shape}, not {(k, n, *shape)}")
                self.present[label].append(~np.isnan(value.reshape(k, -1)).all(axis=1))
                self._append(f"labels/{label}", value.reshape(-1, *shape))
        self.counts.append(np.full(k, n, dtype=np.int64))
        if name not in self.name_index:
            self.name_index[name] = len(self.names)
            self.names.append(name)
        self.molecule.append(np.full(k, self.name_index[name], dtype=np.int64))
        self.elements.append(np.tile(np.bincount(species, minlength=128)[None, :], (k, 1)).astype(np.uint16))

    def __enter__(self) -> "PackedWriter":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        """After a ``with`` block: :meth:`close` (the file appears), or :meth:`abort` when the block raised."""
        if kind is None:
            self.close()
        else:
            self.abort()

    def abort(self) -> None:
        """Drop the unfinished temporary file; the target is left as it was."""
        self.file.close()
        self.tmp.unlink(missing_ok=True)

    def close(self) -> Path:
        f = self.file
        f["atom_ptr"] = np.cumsum(np.concatenate(self.counts))
        f["molecule"] = np.concatenate(self.molecule) if self.molecule else np.zeros(0, dtype=np.int64)
        f["molecule_names"] = np.array(self.names, dtype=h5py.string_dtype())
        counts = np.concatenate(self.elements) if self.elements else np.zeros((0, 128), dtype=np.uint16)
        present = np.flatnonzero(counts.sum(axis=0))
        f["element_counts"] = counts[:, present]
        f["elements"] = present
        for label, values in self.conf_labels.items():
            f[f"labels/{label}"] = np.concatenate(values)
        for label, values in self.present.items():
            f[f"present/{label}"] = np.concatenate(values)
        pbc = np.concatenate(self.pbcs) if self.pbcs else np.zeros((0, 3), dtype=bool)
        if pbc.any():
            f["cell"] = np.concatenate(self.cells)
            f["pbc"] = pbc
        if self.origin_table:
            codes = np.concatenate(self.origin_codes)
            if (codes < 0).any():  # configurations added without an origin
                codes[codes < 0] = self.origin_table.setdefault("", len(self.origin_table))
            f["origin"] = codes
            f["origins"] = np.array(list(self.origin_table), dtype=h5py.string_dtype())
        f.attrs.update(self.attrs)
        f.attrs.update({"format": FORMAT, "source": self.source, "content_hash": self.hash.hexdigest()[:16]})
        f.close()
        os.replace(self.tmp, self.path)
        return self.path


def _cells_of(k: int, cell: np.ndarray | None, pbc: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(k, 3, 3) cells and (k, 3) pbc of k configurations; zeros and False for open ones."""
    if cell is None:
        if pbc is not None and np.any(pbc):
            raise ValueError("pbc without a cell")
        return np.zeros((k, 3, 3)), np.zeros((k, 3), dtype=bool)
    cell = np.asarray(cell, dtype=np.float64)
    cells = np.broadcast_to(cell, (k, 3, 3)).copy() if cell.shape == (3, 3) else cell.reshape(k, 3, 3).copy()
    pbc = np.ones(3, dtype=bool) if pbc is None else np.asarray(pbc, dtype=bool)
    pbcs = np.broadcast_to(pbc, (k, 3)).copy() if pbc.shape == (3,) else pbc.reshape(k, 3).copy()
    cells[~pbcs.any(axis=1)] = 0.0  # an open configuration carries no cell
    return cells, pbcs


def pack_ani(source: str | os.PathLike, target: str | os.PathLike, units: str = "auto", overwrite: bool = False) -> Path:
    """An ANI-layout file as a packed file: every per-configuration and per-atom key, energies and forces in eV(/Å).

    ``units``: the source's energy unit, "hartree", "ev" or "auto" (Hartree, refused when the energies look like eV,
    see :func:`~kdframe.data.ani_layout.check_hartree`). The target is never the source (nor a link to it) and an
    existing target is replaced only with ``overwrite``; the target appears whole (atomic rename) or not at all.
    """
    source, target = Path(source), Path(target)
    check_target(source, target, overwrite)
    if units not in ("auto", "hartree", "ev"):
        raise DataError(f"{source}: units {units!r} (valid: auto, hartree, ev)")
    if is_packed(source):
        raise DataError(f"{source}: already a packed file (valid source: an ANI-layout file, one group per molecule)")
    to_ev = 1.0 if units == "ev" else HARTREE_TO_EV
    with open_hdf5(source, "ANI-layout") as f:
        groups = molecule_groups(f)
        if not groups:
            raise DataError(f"{source}: no molecule groups with 'coordinates' and 'atomic_numbers' found")
        kinds: dict[str, str] = {}
        shapes: dict[str, tuple[int, ...]] = {}  # per-atom keys: (3,) vectors (forces) or () scalars (atom energies)
        ratios: dict[str, list[np.ndarray]] = {}
        for name, group in groups:
            k, n = group["coordinates"].shape[:2]
            for key, value in group.items():
                if key in SKIPPED or not isinstance(value, h5py.Dataset):
                    continue
                if value.shape == (k,):
                    kinds.setdefault(key, PER_CONF)
                    if units == "auto" and key.endswith(("energy", "energies")):
                        z = molecule_species(group)
                        ratios.setdefault(key, []).append(energy_ratios(
                            real_numbers(f"{source}:/{name}/{key}", key, value[()]), z[z > 0]))
                elif value.shape in ((k, n, 3), (k, n)):
                    kinds.setdefault(key, PER_ATOM)
                    shapes.setdefault(key, value.shape[2:])
        for key, found in ratios.items():
            check_hartree(f"{source}: key {key!r} (--units auto)", np.concatenate(found))
        with PackedWriter(target, kinds, source.stem, atom_shapes=shapes) as writer:
            for name, group in groups:
                z, xyz, keep = ani_molecule(source, name, group)
                k, n = group["coordinates"].shape[:2]
                # the shape checked: (k,) energies, (k, n, 3) forces, (k, n) for any other name (atom energies)
                labels = {key: unpad(checked_label(f"{source}:/{name}/{key}", "energy" if kinds[key] == PER_CONF else
                                                   "forces" if shapes[key] else key,
                                                   real_numbers(f"{source}:/{name}/{key}", key, group[key][()]), k, n),
                                      keep, n)
                          * (to_ev if in_energy_units(key) else 1.0) for key in kinds if key in group}
                writer.add(name, z, xyz, labels)
        return writer.path


def check_target(source: Path, target: Path, overwrite: bool) -> None:
    """Refuse a target that is the source (also through a symbolic or hard link), or that exists without ``overwrite``."""
    if target.exists() and source.exists() and os.path.samefile(source, target):
        raise DataError(f"{target}: is the source file {source} (the same file on disk); packing would replace it "
                        "(valid: another target path)")
    if target.is_dir():
        raise DataError(f"{target}: is a directory (valid: a file path for the packed file)")
    if target.exists() and not overwrite:
        raise DataError(f"{target}: exists (valid: another path, or --force to replace it)")


class _Store:
    """What every view of one packed file shares: the per-configuration arrays and the block cache."""

    def __init__(self, path: Path):
        self.path = path
        with h5py.File(path, "r") as f:
            self.atom_ptr = f["atom_ptr"][()].astype(np.int64)  # (C+1,), from 0
            self.molecule = f["molecule"][()]
            self.molecule_names = [s.decode() if isinstance(s, bytes) else s for s in f["molecule_names"][()]]
            self.element_counts = f["element_counts"][()]
            self.elements = f["elements"][()]
            self.format = str(f.attrs["format"])
            self.kinds = {k: (PER_ATOM if k in f.get("present", {}) else PER_CONF) for k in f.get("labels", {})}
            self.conf_labels = {k: f[f"labels/{k}"][()] for k, kind in self.kinds.items() if kind == PER_CONF}
            self.present = {k: f[f"present/{k}"][()] for k in f.get("present", {})}
            self.atom_shapes = {k: f[f"labels/{k}"].shape[1:] for k in self.present}  # (3,) forces, () atom energies
            self.source, self.content_hash = str(f.attrs["source"]), str(f.attrs["content_hash"])
            # (C, 3, 3) Å and (C, 3) bool, or None when no configuration is periodic (format 1: never)
            self.cell = f["cell"][()] if "cell" in f else None
            self.pbc = f["pbc"][()].astype(bool) if "pbc" in f else None
            self.origin = f["origin"][()].astype(np.int64) if "origin" in f else None  # (C,) codes into origins
            self.origins = ([s.decode() if isinstance(s, bytes) else s for s in f["origins"][()]]
                            if "origins" in f else [])
        self.blocks: OrderedDict[tuple[int, tuple[str, ...]], dict[str, np.ndarray]] = OrderedDict()
        self._file: h5py.File | None = None  # opened on first read, in the process that reads

    def block(self, b: int, labels: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Species, positions and per-atom ``labels`` of block ``b`` (least recently used blocks dropped)."""
        key = (b, labels)
        if key in self.blocks:
            self.blocks.move_to_end(key)
            return self.blocks[key]
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        start = self.atom_ptr[b * BLOCK_CONFS]
        stop = self.atom_ptr[min((b + 1) * BLOCK_CONFS, len(self.atom_ptr) - 1)]
        arrays = {"species": self._file["species"][start:stop].astype(np.int64),
                  "positions": self._file["positions"][start:stop]}
        arrays.update({k: self._file[f"labels/{k}"][start:stop] for k in labels})
        self.blocks[key] = arrays
        while len(self.blocks) > 2 * WINDOW:
            self.blocks.popitem(last=False)
        return arrays


def describe(path: str | os.PathLike) -> str:
    """Summary of a packed file: sizes and how many configurations carry each label (eV, eV/Å)."""
    store = _Store(Path(path))
    n_conf = len(store.molecule)
    periodic = 0 if store.pbc is None else int(store.pbc.any(axis=1).sum())
    lines = [f"{path}: packed ({store.source}), {len(store.molecule_names)} molecules, {n_conf} conformations, "
             f"{int(store.atom_ptr[-1])} atoms" + (f", {periodic} periodic" if periodic else "")]
    if store.origin is not None:
        kinds: dict[str, int] = {}
        for code, count in zip(*np.unique(store.origin, return_counts=True)):
            kind = store.origins[code].split(":", 1)[0] or "-"
            kinds[kind] = kinds.get(kind, 0) + int(count)
        lines.append("  origins: " + ", ".join(f"{kind} {count}" for kind, count in kinds.items()))
    lines.append(f"  {'label':<28} {'conformations':>13}")
    for key in sorted(store.kinds):
        present = store.present[key] if key in store.present else ~np.isnan(store.conf_labels[key])
        lines.append(f"  {key:<28} {int(present.sum()):>8}/{n_conf}" + _spread_summary(key, store, present))
    return "\n".join(lines)


def _spread_summary(key: str, store: _Store, present: np.ndarray) -> str:
    """Percentiles of a per-configuration spread of energies or forces (``*.energy_std``, ``*.forces_std``), to
    choose a confidence scale from; else ""."""
    if not (key.endswith("_std") and in_energy_units(key)) or key not in store.conf_labels or not present.any():
        return ""
    median, p90, p99 = np.percentile(store.conf_labels[key][present], [50, 90, 99])
    unit = "eV/Å" if key.removesuffix("_std").endswith("forces") else "eV"
    return f"  spread: median {median:.3g}, 90th percentile {p90:.3g}, 99th {p99:.3g} {unit}"


class PackedDataset(Batching):
    """A view (a subset of configurations) of a packed file, with the interface of :class:`Dataset`.

    Per-configuration labels are arrays; a per-atom label is read from disk for the whole view when
    indexed (evaluation sets), while training batches read only the blocks they need.
    """

    def __init__(self, store: _Store, keys: Mapping[str, str], confs: np.ndarray | None = None,
                 extra: Mapping[str, np.ndarray] | None = None):
        self.store, self.keys = store, dict(keys)
        self.confs = np.arange(len(store.molecule)) if confs is None else np.asarray(confs, dtype=np.int64)
        self.extra = dict(extra or {})  # per-configuration labels added in memory (with_labels)
        self.labels = _Labels(self)
        self.source = store.source

    @classmethod
    def open(cls, path: str | os.PathLike, keys: Mapping[str, str]) -> "PackedDataset":
        store = _Store(Path(path))
        for label, key in keys.items():
            if key not in store.kinds:
                raise DataError(f"{path}: key {key!r} (for {label!r}) not found (available: {', '.join(sorted(store.kinds))})")
        return cls(store, keys)

    def __len__(self) -> int:
        return len(self.confs)

    @property
    def periodic(self) -> bool:
        """True when some configuration of this view has a cell (as :attr:`Dataset.periodic`)."""
        if not hasattr(self, "_periodic"):
            self._periodic = self.store.pbc is not None and bool(self.store.pbc[self.confs].any())
        return self._periodic

    @property
    def cell(self) -> np.ndarray | None:
        """(C, 3, 3) Å of this view (zeros for open configurations), or None when none is periodic."""
        return self.store.cell[self.confs] if self.periodic else None

    @property
    def pbc(self) -> np.ndarray | None:
        """(C, 3) bool of this view, or None when none is periodic."""
        return self.store.pbc[self.confs] if self.periodic else None

    @property
    def origin(self) -> np.ndarray:
        """(C,) origin string of each configuration of this view ("" where the file records none)."""
        if self.store.origin is None:
            return np.full(len(self), "", dtype=object)
        return np.array(self.store.origins, dtype=object)[self.store.origin[self.confs]]

    @property
    def n_atoms(self) -> np.ndarray:
        return np.diff(self.store.atom_ptr)[self.confs]

    @property
    def molecule(self) -> np.ndarray:
        return self.store.molecule[self.confs]

    @property
    def molecule_names(self) -> list[str]:
        return self.store.molecule_names

    def elements(self) -> np.ndarray:
        return self.store.elements[self.store.element_counts[self.confs].sum(axis=0) > 0]

    def label_kind(self, name: str) -> str:
        return PER_CONF if name in self.extra else self.store.kinds[self.keys[name]]

    def element_counts(self) -> np.ndarray:
        counts = np.zeros((len(self), int(self.store.elements.max()) + 1))
        counts[:, self.store.elements] = self.store.element_counts[self.confs]
        return counts

    def labelled(self, names: Sequence[str]) -> np.ndarray:
        found = np.zeros(len(self), dtype=bool)
        for name in names:
            if self.label_kind(name) == PER_ATOM:
                found |= self.store.present[self.keys[name]][self.confs]
            else:
                found |= ~np.isnan(self.labels[name])
        return found

    def subset(self, confs: Sequence[int] | np.ndarray) -> "PackedDataset":
        confs = np.asarray(confs, dtype=np.int64)
        return PackedDataset(self.store, self.keys, self.confs[confs], {k: v[confs] for k, v in self.extra.items()})

    def with_labels(self, **labels: np.ndarray) -> "PackedDataset":
        for name, value in labels.items():
            if value.shape != (len(self),):
                raise DataError(f"{self.store.path}: label {name!r}: a packed dataset takes only per-configuration "
                                f"labels in memory (shape ({len(self)},), got {value.shape}); per-atom labels stream from disk")
        return PackedDataset(self.store, self.keys, self.confs, {**self.extra, **labels})

    def content_hash(self, labels: Sequence[str] | None = None) -> str:
        h = hashlib.sha256(self.store.content_hash.encode())
        h.update(self.confs.tobytes())
        for name in sorted(self.labels if labels is None else labels):
            h.update(name.encode())
            h.update(self.extra[name].tobytes() if name in self.extra else self.keys[name].encode())
        return h.hexdigest()[:16]

    def batch(self, confs: Sequence[int] | np.ndarray, labels: Sequence[str] | None = None) -> Batch:
        confs = np.asarray(confs, dtype=np.int64)
        files = self.confs[confs]
        names = list(self.labels if labels is None else labels)
        per_atom = tuple(sorted(self.keys[n] for n in names if self.label_kind(n) == PER_ATOM))
        atoms, counts = atom_ranges(self.store.atom_ptr, files)
        atom_block = np.repeat(files // BLOCK_CONFS, counts)
        out = {"species": np.empty(len(atoms), dtype=np.int64), "positions": np.empty((len(atoms), 3))}
        out.update({k: np.empty((len(atoms), *self.store.atom_shapes[k])) for k in per_atom})
        for b in np.unique(atom_block):
            rows = atom_block == b
            local = atoms[rows] - self.store.atom_ptr[b * BLOCK_CONFS]
            for key, array in self.store.block(int(b), per_atom).items():
                out[key][rows] = array[local]
        batch_labels = {n: torch.from_numpy(out[self.keys[n]] if self.label_kind(n) == PER_ATOM
                                            else self._conf_label(n, confs)) for n in names}
        periodic = self.periodic
        return Batch(species=torch.from_numpy(out["species"]), positions=torch.from_numpy(out["positions"]),
                     conf_index=torch.from_numpy(np.repeat(np.arange(len(confs)), counts)), n_conf=len(confs),
                     cell=torch.from_numpy(self.store.cell[files]) if periodic else None,
                     pbc=torch.from_numpy(self.store.pbc[files]) if periodic else None,
                     labels=batch_labels, index=torch.from_numpy(confs))

    def _conf_label(self, name: str, confs: np.ndarray) -> np.ndarray:
        """A per-configuration label of some configurations of this view (without indexing the whole view)."""
        if name in self.extra:
            return self.extra[name][confs]
        return self.store.conf_labels[self.keys[name]][self.confs[confs]]

    def batch_indices(self, batch_size: int, shuffle: bool = False,
                      generator: torch.Generator | None = None) -> Iterator[np.ndarray]:
        """In file order, or block-shuffled: blocks in random order, configurations shuffled within windows."""
        if not shuffle:
            return self.in_batches(np.arange(len(self)), batch_size)
        # int32 keys: the shuffle of an epoch needs O(configurations) memory; keep it small
        block_of = (self.confs // BLOCK_CONFS).astype(np.int32)
        blocks = np.unique(block_of)
        rank = np.empty(int(blocks.max()) + 1 if len(blocks) else 0, dtype=np.int32)
        rank[blocks[torch.randperm(len(blocks), generator=generator).numpy()]] = np.arange(len(blocks), dtype=np.int32)
        window = rank[block_of] // WINDOW
        del block_of
        jitter = torch.randperm(len(self), generator=generator, dtype=torch.int32).numpy()
        order = np.lexsort((jitter, window))  # by window, randomly within a window
        return self.in_batches(order, batch_size)


class _Labels(Mapping[str, np.ndarray]):
    """The labels of a view: per-configuration ones from memory, per-atom ones read from disk on access."""

    def __init__(self, view: PackedDataset):
        self.view = view

    def __iter__(self) -> Iterator[str]:
        return iter([*self.view.keys, *self.view.extra])

    def __len__(self) -> int:
        return len(self.view.keys) + len(self.view.extra)

    def __contains__(self, name: object) -> bool:  # without reading a per-atom label
        return name in self.view.keys or name in self.view.extra

    def __getitem__(self, name: str) -> np.ndarray:
        view = self.view
        if name in view.extra:
            return view.extra[name]
        key = view.keys[name]
        if view.store.kinds[key] == PER_CONF:
            return view.store.conf_labels[key][view.confs]
        parts = [view.batch(confs, labels=[name]).labels[name].numpy()
                 for confs in view.batch_indices(BLOCK_CONFS)]
        return np.concatenate(parts) if parts else np.zeros((0, *view.store.atom_shapes[key]))
