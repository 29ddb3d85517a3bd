"""Resumable, parallel labelling of ANI-layout HDF5 files.

Every finished conformation is appended as one JSON line to ``<file>.labelling/<method>.jsonl``
(flushed and fsynced; the ``<file>.labelling/`` directory is beside the file unless ``journals`` names
another directory to hold it, as the bundled datasets' scripts do with ``data/labelling/``), so a ``kill -9`` loses only the items being computed. ``merge`` folds
all journals of a file into the HDF5 atomically (copy, write, fsync, rename), every
``merge_every`` items (but in about a tenth of the run's time at most), every ``MERGE_SECONDS`` and at the end; a new
run merges first and skips whatever is already labelled in the file or finished (or failed) in the journal. Floats go through JSON with
Python's round-trip ``repr``, so merged values are bit-identical to the computed ones.

Workers are spawned processes with one thread each (OMP_NUM_THREADS=1 etc.).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import __version__
from .errors import ConfigError, DataError
from .io import journal_records, open_journal, write_record
from .labeler import HessianLabeler, Labeler, LabelError, get_labeler

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")

MAX_UNEXPECTED_ERRORS = 5
MERGE_SECONDS = 600.0  # also merge at least this often, so slow levels show up in the file
# Each merge copies the whole file and reads every journal: with cheap labels (xTB, 5 ms) merging every
# ``merge_every`` items costs more than labelling, and more the larger the file (5,000 xTB configurations: 3.0x
# the time, benchmarks/results/labelling_merges.md), so a merge waits until the time since the last one is at least
# its duration / MERGE_SHARE. The journals, not the merges, are what keeps finished work through a kill.
MERGE_SHARE = 0.1


@contextmanager
def one_thread_children() -> Iterator[None]:
    """Processes spawned inside start with one thread each (THREAD_VARIABLES, read before they import numpy); this
    process's own settings are restored after."""
    saved = {var: os.environ.get(var) for var in THREAD_VARIABLES}
    os.environ.update({var: "1" for var in THREAD_VARIABLES})
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


@dataclass
class Item:
    """One conformation to label."""

    group: str
    index: int
    numbers: np.ndarray
    positions: np.ndarray
    origin: str = ""

    @property
    def key(self) -> tuple[str, int]:
        return (self.group, self.index)

    @property
    def digest(self) -> str:
        return conformation_digest(self.numbers, self.positions)


@dataclass
class Summary:
    """What one ``label_file`` call did."""

    method: str
    selected: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    errors: int = 0
    seconds: list[float] = field(default_factory=list)

    @property
    def mean_seconds(self) -> float:
        return float(np.mean(self.seconds)) if self.seconds else float("nan")


def conformation_digest(numbers: np.ndarray, positions: np.ndarray) -> str:
    """Identifies a conformation, so journal entries never attach to a changed geometry."""
    h = hashlib.sha1(np.ascontiguousarray(numbers, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(positions, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def journal_dir(path: str | os.PathLike, journals: str | os.PathLike | None = None) -> Path:
    """``<file>.labelling/``: beside the file, or in the directory ``journals`` when given."""
    path = Path(path)
    return Path(journals if journals is not None else path.parent) / f"{path.name}.labelling"


def journal_path(path: str | os.PathLike, method: str, journals: str | os.PathLike | None = None) -> Path:
    return journal_dir(path, journals) / f"{method}.jsonl"


# ----------------------------------------------------------------------------- journal


def read_journal(path: Path) -> tuple[list[dict], dict[tuple[str, int], dict]]:
    """(run records, last item record per (group, index)); a torn last line (kill -9) is ignored."""
    runs: list[dict] = []
    items: dict[tuple[str, int], dict] = {}
    for record in journal_records(path):
        if record.get("type") == "run":
            runs.append(record)
        elif record.get("type") == "item":
            items[(record["group"], int(record["index"]))] = record
    return runs, items


class JournalWriter:
    """Appends JSON lines, each flushed and fsynced."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open_journal(path)

    def append(self, record: dict) -> None:
        write_record(self._f, record)

    def close(self) -> None:
        self._f.close()


@contextmanager
def _locked(path: Path, blocking: bool = True) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise DataError(f"{path}: another process is labelling this file with this method") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- selection


def read_items(path: str | os.PathLike) -> list[Item]:
    """Every conformation of an ANI-layout file, in file order, checked (no NaN coordinates, no overlapping atoms);
    padding atoms (atomic number 0) are not part of an item."""
    from .data.ani_layout import molecule, molecule_groups, open_hdf5  # kdframe.data imports torch: not in workers
    from .data.packed import is_packed

    path = Path(path)
    if path.suffix.lower() in (".xyz", ".extxyz"):
        raise DataError(f"{path}: an extxyz file; kdframe data label labels ANI-layout HDF5 files (valid: a file from "
                        "kdframe data sample, one group per molecule with 'atomic_numbers' and 'coordinates')")
    if is_packed(path):
        raise DataError(f"{path}: a packed file; label its ANI-layout source, then pack it again (valid: an "
                        "ANI-layout HDF5 file, one group per molecule)")
    items = []
    with open_hdf5(path, "ANI-layout") as f:
        groups = molecule_groups(f)
        if not groups:
            raise DataError(f"{path}: no molecule groups with 'coordinates' and 'atomic_numbers' found (valid: an "
                            "ANI-layout HDF5 file, one group per molecule)")
        for name, group in groups:
            numbers, coords, _ = molecule(path, name, group)
            origins = json.loads(group.attrs.get("origins", "[]")) or [""] * len(coords)
            items.extend(Item(name, i, numbers, coords[i], origins[i]) for i in range(len(coords)))
    return items


def spread_indices(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when k >= n)."""
    if k >= n:
        return list(range(n))
    return sorted(set(np.round(np.linspace(0, n - 1, k)).astype(int).tolist()))


def select_items(items: Sequence[Item], molecules: Sequence[str] | None = None, per_molecule: int | None = None,
                 limit: int | None = None, order: str = "size", origin: str | None = None) -> list[Item]:
    """The target set: chosen molecules (and sampling origin prefix, e.g. "opt"), ``per_molecule``
    evenly spread conformations each, ordered, at most ``limit``.

    The selection depends only on the file, never on what is done, so a rerun targets the same set.
    """
    for option, value in (("--per-molecule", per_molecule), ("--limit", limit)):
        if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1):
            raise ConfigError(option, f"{value!r}: 0 or a negative count would label everything, or all but some",
                              "a positive integer; omit the option for all")
    by_group: dict[str, list[Item]] = {}
    for item in items:
        if origin and not item.origin.startswith(origin):
            continue
        by_group.setdefault(item.group, []).append(item)
    if molecules:
        unknown = sorted(set(molecules) - set(by_group))
        if unknown:
            raise ConfigError("--molecules", f"not in the file: {', '.join(unknown)}", by_group)
        by_group = {g: by_group[g] for g in by_group if g in set(molecules)}
    chosen: list[Item] = []
    for group_items in by_group.values():
        idx = spread_indices(len(group_items), per_molecule) if per_molecule else range(len(group_items))
        chosen.extend(group_items[i] for i in idx)
    if order == "size":  # smallest molecules (electrons) first: cheap levels finish many items early
        chosen.sort(key=lambda it: (int(it.numbers.sum()), len(it.numbers), it.group, it.index))
    elif order == "round-robin":  # every molecule represented as early as possible
        seen: dict[str, int] = {}
        rank = {}
        for it in chosen:
            rank[it.key] = seen.get(it.group, 0)
            seen[it.group] = rank[it.key] + 1
        chosen.sort(key=lambda it: (rank[it.key], int(it.numbers.sum()), it.group))
    elif order != "file":
        raise ConfigError("--order", f"unknown order {order!r}", ("size", "round-robin", "file"))
    return chosen[:limit] if limit else chosen


def _labelled_in_file(path: str | os.PathLike, method: str, quantity: str = "energy") -> set[tuple[str, int]]:
    from .data.ani_layout import molecule_groups, open_hdf5

    done = set()
    with open_hdf5(path, "ANI-layout") as f:
        for name, group in molecule_groups(f):
            key = f"{method}.{quantity}"
            if key in group:
                value = group[key][()]
                finite = np.isfinite(value.reshape(len(value), -1)).all(axis=1)
                done.update((name, int(i)) for i in np.flatnonzero(finite))
    return done


def label_shape(quantity: str, n_conf: int, n_atoms: int) -> tuple[int, ...]:
    """Shape of ``<method>.<quantity>`` in an ANI-layout group (ANI units; Hessians (3N, 3N) per conformation)."""
    return {"forces": (n_conf, n_atoms, 3), "hessian": (n_conf, 3 * n_atoms, 3 * n_atoms)}.get(quantity, (n_conf,))


# ----------------------------------------------------------------------------- workers

_WORKER_LABELER: Labeler | None = None


def init_worker(labeler: Labeler, parent: int | None = None) -> None:
    """A worker process's set-up: one thread, ``labeler`` ready (:func:`worker_labeler`), gone with ``parent``."""
    global _WORKER_LABELER
    if parent is not None:
        die_with_parent(parent)
    for var in THREAD_VARIABLES:
        os.environ[var] = "1"
    _WORKER_LABELER = labeler
    labeler.setup_worker()


def worker_labeler() -> Labeler:
    """The labeler :func:`init_worker` set up in this process."""
    if _WORKER_LABELER is None:
        raise RuntimeError("init_worker was not called in this process")
    return _WORKER_LABELER


PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """End this (worker) process when process ``parent`` ends, also by SIGKILL, so no worker outlives its run.

    Linux: the kernel sends SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG); elsewhere a daemon thread
    watches the parent id. A parent already gone before this call is caught by comparing ``os.getppid()``.
    """
    import ctypes
    import signal
    import threading

    armed = False
    if sys.platform.startswith("linux"):
        try:
            armed = ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent:
        os._exit(1)
    if armed:
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="kdframe-parent-watch", daemon=True).start()


def _compute(labeler: Labeler | None, item: Item) -> dict[str, Any]:
    """Label one item; returns a journal record (LabelError becomes a recorded failure)."""
    labeler = labeler or worker_labeler()
    start = time.perf_counter()
    record: dict[str, Any] = {"type": "item", "group": item.group, "index": item.index, "digest": item.digest}
    try:
        out = labeler.compute(item.numbers, item.positions)
        record.update(ok=True, values={k: np.asarray(v, dtype=np.float64).tolist() for k, v in out.items()})
    except LabelError as exc:
        record.update(ok=False, error=str(exc))
    record.update(seconds=round(time.perf_counter() - start, 3), host=socket.gethostname(),
                  finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return record


def _worker_compute(item: Item) -> dict[str, Any]:
    return _compute(None, item)


# ----------------------------------------------------------------------------- running


def label_file(path: str | os.PathLike, method: str, *, workers: int = 1, molecules: Sequence[str] | None = None,
               per_molecule: int | None = None, limit: int | None = None, order: str = "size",
               merge_every: int = 25, retry_failed: bool = False, progress: bool = True,
               origin: str | None = None, labeler: Labeler | None = None, hessian: bool = False,
               journals: str | os.PathLike | None = None) -> Summary:
    """Label the selected conformations of ``path`` with ``method``; resumable (see module docstring).

    ``workers=0`` computes in this process (tests, debugging); otherwise ``workers`` spawned
    single-threaded processes. ``hessian``: ``<method>.hessian`` instead (:class:`~kdframe.labeler.HessianLabeler`).
    ``journals``: the directory holding ``<file>.labelling/`` (default: the file's own).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    items = read_items(path)  # refuses a file that is not ANI-layout HDF5, or bad geometries, before anything is written
    targets = select_items(items, molecules, per_molecule, limit, order, origin)  # likewise bad options
    labeler = labeler or get_labeler(method)
    if hessian:
        if "forces" not in labeler.provides:
            raise ConfigError("--hessian", f"method {method!r} provides no forces to differentiate")
        labeler = HessianLabeler(labeler)
    _check_elements(labeler, targets)
    summary = Summary(method)
    jpath = journal_path(path, labeler.job, journals)
    with _locked(jpath.with_suffix(".lock"), blocking=False):
        merge(path, journals)
        runs, journal = read_journal(jpath)
        _check_settings(jpath, runs, labeler)
        finished = _labelled_in_file(path, method, labeler.provides[0])
        pending = []
        for item in targets:
            record = journal.get(item.key)
            if item.key in finished or (record and record["digest"] == item.digest and (record["ok"] or not retry_failed)):
                continue
            pending.append(item)
        summary.selected, summary.skipped = len(targets), len(targets) - len(pending)
        if not pending:
            return summary
        writer = JournalWriter(jpath)
        writer.append({"type": "run", "method": method, "provides": list(labeler.provides),
                       "extras": list(labeler.extras), "settings": labeler.settings(), "versions": _versions(labeler),
                       "workers": workers, "host": socket.gethostname(), "items": len(pending),
                       "started": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        try:
            _run(pending, labeler, workers, writer, summary, path, merge_every, progress, journals)
        finally:
            writer.close()
            merge(path, journals)
    return summary


def _run(pending: list[Item], labeler: Labeler, workers: int, writer: JournalWriter, summary: Summary,
         path: Path, merge_every: int, progress: bool, journals: str | os.PathLike | None = None) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(pending), desc=f"{labeler.method} {path.name}", unit="conf", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    since_merge, last_merge, merge_seconds = 0, time.monotonic(), 0.0

    def record_result(record: dict | None, item: Item, error: BaseException | None = None) -> None:
        nonlocal since_merge, last_merge, merge_seconds
        bar.update(1)
        if error is not None:  # unexpected: not journalled, so a later run retries it
            summary.errors += 1
            print(f"\n{item.group}[{item.index}]: {type(error).__name__}: {error}", file=sys.stderr)
            if summary.errors >= MAX_UNEXPECTED_ERRORS:
                raise DataError(f"{labeler.method}: {summary.errors} unexpected errors, stopping (last: {error})")
            return
        writer.append(record)
        summary.seconds.append(record["seconds"])
        if record["ok"]:
            summary.done += 1
        else:
            summary.failed += 1
        bar.set_postfix(failed=summary.failed, s_per_conf=f"{summary.mean_seconds:.2f}")
        since_merge += 1
        waited = time.monotonic() - last_merge
        if (merge_every and since_merge >= merge_every and waited >= merge_seconds / MERGE_SHARE) or waited > MERGE_SECONDS:
            start = time.monotonic()
            merge(path, journals)
            since_merge, last_merge = 0, time.monotonic()
            merge_seconds = last_merge - start
            if not progress:  # a line per merge for log files
                print(f"{datetime.now().isoformat(timespec='seconds')} {labeler.method} {path.name}: "
                      f"{summary.done + summary.failed}/{len(pending)} done ({summary.failed} failed), {summary.mean_seconds:.2f} s/conformation",
                      file=sys.stderr, flush=True)

    try:
        if workers <= 0:
            labeler.setup_worker()
            for item in pending:
                try:
                    record_result(_compute(labeler, item), item)
                except DataError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    record_result(None, item, exc)
            return
        import multiprocessing

        with one_thread_children(), ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                        initializer=init_worker, initargs=(labeler, os.getpid())) as pool:
            queue = iter(pending)
            running = {}
            for item in queue:  # keep a bounded number in flight so an interrupt stops quickly
                running[pool.submit(_worker_compute, item)] = item
                if len(running) >= 2 * workers:
                    break
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    item = running.pop(future)
                    exc = future.exception()
                    record_result(None if exc else future.result(), item, exc)
                    nxt = next(queue, None)
                    if nxt is not None:
                        running[pool.submit(_worker_compute, nxt)] = nxt
    finally:
        bar.close()


def _versions(labeler: Labeler) -> dict[str, str]:
    return {"kdframe": __version__, "python": platform.python_version(), "h5py": h5py.__version__,
            **labeler.versions()}


def _check_elements(labeler: Labeler, targets: list[Item]) -> None:
    """Refuse, before any work, molecules with elements the labeler cannot label (naming them)."""
    known = labeler.elements()
    if known is None:
        return
    outside = sorted({item.group for item in targets if not set(item.numbers.tolist()) <= known})
    if outside:
        shown = ", ".join(outside[:10]) + (f" and {len(outside) - 10} more" if len(outside) > 10 else "")
        raise ConfigError(f"--method {labeler.method}", f"labels elements {sorted(known)} only; molecules {shown} have "
                          "others (leave them out with --molecules)")


def _check_settings(jpath: Path, runs: list[dict], labeler: Labeler) -> None:
    """Refuse to mix two different levels of theory under one method key."""
    settings = json.loads(json.dumps(labeler.settings()))
    for run in runs:
        if run.get("settings") != settings:
            raise DataError(f"{jpath}: earlier runs used settings {run.get('settings')}, "
                            f"now {settings}; use another method name or a fresh journal")


# ----------------------------------------------------------------------------- merging


def merge(path: str | os.PathLike, journals: str | os.PathLike | None = None) -> int:
    """Fold every journal of ``path`` (in ``journals``, see :func:`journal_dir`) into the HDF5 file atomically;
    returns the number of labels written."""
    path = Path(path)
    jdir = journal_dir(path, journals)
    journals = sorted(jdir.glob("*.jsonl")) if jdir.is_dir() else []
    if not journals:
        return 0
    with _locked(jdir / "merge.lock"):
        for stale in path.parent.glob(f".{path.name}.merge.*.tmp"):  # left by a merge killed midway
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.merge.", suffix=".tmp")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            shutil.copymode(path, tmp)
            with h5py.File(tmp, "r+") as f:
                written = sum(_merge_method(f, jp.stem, *read_journal(jp)) for jp in journals)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return written


def _padded(value: np.ndarray, keep: np.ndarray | None, row: np.ndarray) -> np.ndarray:
    """A label of a conformation without padding atoms, placed in the padded ``row``; padding entries are 0, as
    padded files store them (NaN would mark the conformation unlabelled), and every reader drops them."""
    if keep is None or value.ndim == 0 or value.shape == row.shape:
        return value
    out = np.zeros(row.shape)
    if value.shape[0] == keep.sum():
        out[keep] = value
    else:  # a Hessian: rows and columns of the real atoms
        rows = np.flatnonzero(np.repeat(keep, 3))
        out[np.ix_(rows, rows)] = value
    return out


def _merge_method(f: h5py.File, job: str, runs: list[dict], items: dict[tuple[str, int], dict]) -> int:
    """Write one job's journal into ``f``: labels as ``<method>.<quantity>``, failures and provenance under the job."""
    from .data.ani_layout import molecule_groups, molecule_species

    if not runs:
        return 0
    method = runs[-1].get("method", job)
    provides = runs[-1].get("provides", ["energy"])
    extras = runs[-1].get("extras", [])
    written = 0
    n_ok = n_failed = 0
    for name, group in molecule_groups(f):
        padded = molecule_species(group)
        keep = None if padded.all() else padded != 0
        numbers = padded if keep is None else padded[keep]
        coords = group["coordinates"][()]
        n_conf, n_atoms = coords.shape[:2]
        if keep is not None:
            coords = coords[:, keep]
        arrays = {}
        for key in [*provides, *extras]:
            shape = label_shape(key, n_conf, n_atoms)
            dname = f"{method}.{key}"
            arrays[key] = group[dname][()] if dname in group else np.full(shape, np.nan)
        failures = json.loads(group.attrs.get(f"{job}.failures", "{}"))
        for i in range(n_conf):
            record = items.get((name, i))
            if record is None or record["digest"] != conformation_digest(numbers, coords[i]):
                continue
            if record["ok"]:
                for key, value in record["values"].items():
                    if key in arrays:
                        arrays[key][i] = _padded(np.asarray(value, dtype=np.float64), keep, arrays[key][i])
                failures.pop(str(i), None)
                n_ok += 1
                written += 1
            else:
                failures[str(i)] = record["error"]
                n_failed += 1
        for key, array in arrays.items():
            dname = f"{method}.{key}"
            if dname in group:
                group[dname][...] = array
            else:
                group.create_dataset(dname, data=array)
        if failures:
            group.attrs[f"{job}.failures"] = json.dumps(failures, sort_keys=True)
        elif f"{job}.failures" in group.attrs:
            del group.attrs[f"{job}.failures"]
    f.attrs[f"provenance.{job}"] = json.dumps({
        "method": method, "settings": runs[-1].get("settings"), "versions": runs[-1].get("versions"),
        "units": {"energy": "Hartree", "forces": "Hartree/Angstrom", "hessian": "Hartree/Angstrom^2"},
        "runs": [{k: r.get(k) for k in ("started", "host", "workers", "items")} for r in runs],
        "labelled": n_ok, "failed": n_failed})
    return written
