"""Teacher labelling at scale: every configuration of a file labelled by a teacher ensemble, resumably.

``kdframe data teacher-label INPUT OUTPUT --pretrained NAME | --model FILE ...`` writes OUTPUT as a packed file
(:mod:`kdframe.data.packed`) with the configurations of INPUT (a packed, ANI-layout or extxyz file) and:

- ``teacher.energy`` (eV): the ensemble mean; with ``--align-to DATA --energy-key KEY`` shifted by per-element
  offsets fitted by least squares to that data's energies (:func:`kdframe.teacher.align_reference_energies`),
  so energies are on the ground truth's scale (offsets and source in the file's attributes);
- ``teacher.forces`` (eV/Å): the ensemble-averaged forces;
- ``teacher.energy_std`` (eV): the standard deviation of the members' energies, per configuration;
- ``teacher.forces_std`` (eV/Å): sqrt(mean over atoms and members of |F_m,i - mean_m F_m,i|^2), per configuration;
- with ``--per-atom-spread``, ``teacher.forces_std_atoms`` (eV/Å, per atom and component): the members' standard
  deviation of each force component (its squares summed over components and averaged over atoms give
  ``teacher.forces_std`` squared);
- with ``--atom-energies``, ``teacher.atom_energies`` (eV, per atom): the ensemble mean of the members' atom
  energies, reference energies (and offsets) included, so they sum to ``teacher.energy``
  (:mod:`kdframe.knowledge.atomic`'s convention);
- with ``--hvp``, ``teacher.hvp`` (eV/Å², per atom and component): the Hessian of the ensemble's mean energy times
  each configuration's fixed probe ``teacher.hvp_probe`` (unit norm, drawn from the probe seed and the
  configuration's index in the input file, so a subset gets the probes of the whole file), methods.md §4's cheap form
  of Hessian distillation.

A configuration with an element the teacher does not cover is skipped (its molecule is named on stderr, in the
summary and in the file's ``teacher.skipped`` attribute), before any work starts.

Scale and resumability: configurations are labelled in chunks (``CHUNK`` by default), each written as a shard
``OUTPUT.parts/chunk-NNNNNN.npz`` (atomically) whose SHA-256 goes, with the chunk, into the journal
``OUTPUT.parts/journal.jsonl`` (one fsynced line per finished chunk). Running the same command again after an
interruption (even ``kill -9``) skips the chunks whose shard matches its checksum and gives the same values; a
changed teacher, input or option is refused (the run key: the teacher's
:meth:`~kdframe.teacher.Teacher.fingerprint`, the input's content hash and the options that change labels). The
final merge writes OUTPUT through :class:`~kdframe.data.packed.PackedWriter` (temporary file, atomic rename);
the shards are then removed (``keep_parts`` keeps them). ``workers`` > 0 labels chunks in that many spawned
processes with one torch thread each (CPU); otherwise one process labels on ``device`` (a GPU, or the CPU with
torch's threads). Fitted offsets are stored in the journal so a resumed run applies exactly the same ones.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import io
import json
import os
import pickle
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data.dataset import PER_ATOM, PER_CONF
from .errors import ConfigError, DataError, KdframeError, RunStateError
from .io import append_journal, atomic_write, file_sha256, journal_records, make_dir, note, warn
from .members import forward_with_members, member_gradients
from .probes import ProbeSettings, probes_of
from .teacher import Teacher, align_reference_energies

CHUNK = 4096
BATCH = 128
FORMAT = "kdframe-teacher-labels-1"

ENERGY, FORCES = "teacher.energy", "teacher.forces"
ENERGY_STD, FORCES_STD, FORCES_STD_ATOMS = "teacher.energy_std", "teacher.forces_std", "teacher.forces_std_atoms"
ATOM_ENERGIES = "teacher.atom_energies"
HVP, HVP_PROBE = "teacher.hvp", "teacher.hvp_probe"


@dataclass(frozen=True)
class Outputs:
    """What is labelled besides the energy, its spread and the averaged forces."""

    spread: bool = True  # teacher.forces_std (one gradient per member)
    per_atom: bool = False  # teacher.forces_std_atoms (needs spread)
    atom_energies: bool = False  # teacher.atom_energies
    hvp: ProbeSettings | None = None  # teacher.hvp along fixed probes of these settings, and teacher.hvp_probe


JOURNAL, LOCK = "journal.jsonl", "lock"


class LabellingError(KdframeError):
    """Labelling stopped (a worker process died); what is finished is kept for the next run."""


# ----------------------------------------------------------------------------- the teacher


@dataclass(frozen=True)
class TeacherSpec:
    """How to load a teacher (picklable: worker processes load their own copy)."""

    pretrained: str | None = None
    models: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if bool(self.pretrained) == bool(self.models):
            raise ConfigError("teacher-label", "give --pretrained NAME or --model FILE (once, or several times for an "
                                               "ensemble), not both and not neither")

    @property
    def name(self) -> str:
        return self.pretrained or "+".join(Path(p).name for p in self.models)

    def describe(self) -> str:
        return f"pretrained:{self.pretrained}" if self.pretrained else "models:" + ",".join(map(str, self.models))

    def load(self) -> Teacher:
        from .potential import Ensemble, Potential

        if self.pretrained:
            from .plugins import registry

            loaders = registry().pretrained
            if self.pretrained not in loaders:
                raise ConfigError("--pretrained", f"unknown pretrained model {self.pretrained!r}", loaders)
            return Teacher(loaders[self.pretrained](), self.pretrained)
        members = [Potential.load(p) for p in self.models]
        heads = {tuple(m.heads) for m in members}
        if len(heads) > 1:
            raise ConfigError("--model", "the ensemble's models have different output heads", [",".join(h) for h in heads])
        return Teacher(members[0] if len(members) == 1 else Ensemble(members), self.name)


def apply_offsets(teacher: Teacher, offsets: np.ndarray, head: int = 0) -> None:
    """Add per-element offsets (eV) to every member's reference energies, as
    :func:`~kdframe.teacher.align_reference_energies` does after fitting them."""
    with torch.no_grad():
        for member in teacher.members:
            n = min(len(offsets), member.reference_energies.shape[0])
            member.reference_energies[:n, head] += torch.as_tensor(offsets[:n], device=member.reference_energies.device)


def covered_species(teacher: Teacher) -> list[int]:
    """Elements every member of the teacher covers."""
    return sorted(set.intersection(*(set(m.species) for m in teacher.members)))


class MemberPredictor:
    """Each member's energies and forces for a batch, through the teacher's own forward (so an ensemble that shares
    work between members, e.g. the AEV of ANI ensembles, still does): :func:`~kdframe.members.forward_with_members`,
    then one gradient per member (:func:`~kdframe.members.member_gradients`)."""

    def __init__(self, teacher: Teacher, head: int = 0, device: str | torch.device = "cpu"):
        from .potential import model_dtype

        self.teacher, self.head = teacher, head
        self.model = teacher.model.to(device)
        self.device, self.dtype = torch.device(device), model_dtype(self.model)
        self.members = teacher.members

    def close(self) -> None:
        """Nothing to release: the members' hooks live only during a call."""

    def __call__(self, batch, spread: bool = True) -> dict[str, np.ndarray]:
        """``energy``, ``energy_std`` (n_conf,); ``forces`` (n_atoms, 3); ``atom_energies`` (n_atoms,), the members'
        mean; with ``spread`` also ``forces_dev`` (n_members, n_atoms, 3), each member's forces less the mean. Float64
        numpy arrays."""
        batch = batch.to(self.device, self.dtype)
        batch.positions.requires_grad_(True)
        out, energies = forward_with_members(self.model, batch, self.head)
        mean = out["energy"][:, self.head]
        result = {"energy": mean.detach().double().cpu().numpy(),
                  "energy_std": energies.detach().double().std(0, unbiased=False).cpu().numpy(),
                  "atom_energies": out["atom_energies"][:, self.head].detach().double().cpu().numpy()}
        with torch.enable_grad():
            if spread:
                forces = -member_gradients(energies, [batch.positions])[0].detach().double()
                mean_forces = forces.mean(0)
                result["forces"] = mean_forces.cpu().numpy()
                result["forces_dev"] = (forces - mean_forces).cpu().numpy()
            else:
                result["forces"] = -torch.autograd.grad(mean.sum(), batch.positions)[0].detach().double().cpu().numpy()
        return result

    def hvp(self, batch, probes: torch.Tensor) -> np.ndarray:
        """(n_atoms, 3) H·v of the members' mean energy along ``probes``, float64 numpy."""
        batch = batch.to(self.device, self.dtype)
        product = self.teacher.hessian_vector_product(batch, probes.to(self.device, self.dtype), self.head)
        return product.double().cpu().numpy()


# ----------------------------------------------------------------------------- input


def open_input(path: str | os.PathLike, confs: Sequence[int] | None = None):
    """The configurations of a packed, ANI-layout or extxyz file (a packed file is read lazily); only ``confs``
    (indices, each once, in their order) when given."""
    from .data.readers import read_dataset

    dataset = read_dataset(path, {})
    if confs is None:
        return dataset
    if len(set(confs)) != len(confs) or not all(0 <= i < len(dataset) for i in confs):
        raise ConfigError("confs", f"indices into the {len(dataset)} configurations of {path}, each once")
    return dataset.subset(confs)  # its content hash, in the run key, names these configurations


def _cells_of(dataset) -> bool:
    """Whether the dataset can have periodic configurations."""
    return bool(getattr(dataset, "periodic", False))


def _element_symbol(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else str(z)


def uncovered(dataset, species: Sequence[int]) -> tuple[np.ndarray, dict[str, dict[str, Any]]]:
    """(C,) bool: configurations with an element outside ``species``; per molecule name: configurations and
    elements."""
    counts = dataset.element_counts()
    outside = np.ones(counts.shape[1], dtype=bool)
    outside[[z for z in species if z < len(outside)]] = False
    outside[0] = False
    bad = (counts[:, outside] > 0).any(axis=1)
    report: dict[str, dict[str, Any]] = {}
    names, molecule = dataset.molecule_names, dataset.molecule
    for c in np.flatnonzero(bad):
        entry = report.setdefault(names[int(molecule[c])], {"configurations": 0, "elements": set()})
        entry["configurations"] += 1
        entry["elements"].update(int(z) for z in np.flatnonzero((counts[c] > 0) & outside))
    for entry in report.values():
        entry["elements"] = [_element_symbol(z) for z in sorted(entry["elements"])]
    return bad, report


# ----------------------------------------------------------------------------- shards


def chunk_ranges(n: int, chunk: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk, n)) for start in range(0, n, chunk)]


def shard_name(index: int) -> str:
    return f"chunk-{index:06d}.npz"


def force_spread(forces_dev: np.ndarray, n_atoms: np.ndarray) -> np.ndarray:
    """Per configuration (atoms in ``n_atoms`` order): sqrt(mean over its atoms and the members of |F_m,i - mean F_i|^2),
    from ``forces_dev`` (n_members, n_atoms total, 3), eV/Å."""
    conf = np.repeat(np.arange(len(n_atoms)), n_atoms)
    per_atom_sq = (forces_dev ** 2).sum(-1).mean(0)  # (A,): mean over members of |dev|^2
    return np.sqrt(np.bincount(conf, per_atom_sq, len(n_atoms)) / n_atoms)


def label_chunk(predictor: MemberPredictor, dataset, start: int, stop: int, skip: np.ndarray, batch_size: int,
                outputs: Outputs, confs: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Labels of configurations ``start:stop`` (NaN for skipped ones), as stored in a shard; ``confs``: the input
    file's indices of the dataset's configurations (None: the whole file, in order)."""
    n_atoms = dataset.n_atoms[start:stop].astype(np.int64)
    ptr = np.concatenate([[0], np.cumsum(n_atoms)])
    out = empty_shard(~skip[start:stop], int(ptr[-1]), outputs)
    todo = np.flatnonzero(out["ok"])
    for first in range(0, len(todo), batch_size):
        local = todo[first:first + batch_size]
        batch = dataset.batch(local + start, labels=())
        result = predictor(batch, outputs.spread)
        atoms = np.concatenate([np.arange(ptr[c], ptr[c + 1]) for c in local])
        out["energy"][local] = result["energy"]
        out["energy_std"][local] = result["energy_std"]
        out["forces"][atoms] = result["forces"]
        if outputs.atom_energies:
            out["atom_energies"][atoms] = result["atom_energies"]
        if outputs.spread:
            dev = result["forces_dev"]  # (M, A, 3)
            out["forces_std"][local] = force_spread(dev, n_atoms[local])
            if outputs.per_atom:
                out["forces_std_atoms"][atoms] = np.sqrt((dev ** 2).mean(0))
        if outputs.hvp is not None:
            rows = local + start
            probes = probes_of(n_atoms[local].tolist(), rows if confs is None else np.asarray(confs)[rows], outputs.hvp)
            out["hvp"][atoms] = predictor.hvp(batch, torch.from_numpy(probes))
            out["hvp_probe"][atoms] = probes
    return out


def empty_shard(ok: np.ndarray, n_atoms: int, outputs: Outputs) -> dict[str, np.ndarray]:
    """A shard's arrays for configurations ``ok`` (False: skipped) of ``n_atoms`` atoms in all, every label NaN."""
    n = len(ok)
    out = {"ok": ok, "energy": np.full(n, np.nan), "energy_std": np.full(n, np.nan),
           "forces": np.full((n_atoms, 3), np.nan)}
    if outputs.spread:
        out["forces_std"] = np.full(n, np.nan)
    if outputs.per_atom and outputs.spread:
        out["forces_std_atoms"] = np.full((n_atoms, 3), np.nan)
    if outputs.atom_energies:
        out["atom_energies"] = np.full(n_atoms, np.nan)
    if outputs.hvp is not None:
        out["hvp"] = np.full((n_atoms, 3), np.nan)
        out["hvp_probe"] = np.full((n_atoms, 3), np.nan)
    return out


def chunk_record(index: int, start: int, stop: int, checksum: str, labelled: int, began: float, **extra) -> dict:
    """The journal line of a finished chunk."""
    return {"type": "chunk", "index": index, "file": shard_name(index), "checksum": checksum, "start": start,
            "stop": stop, "labelled": labelled, "seconds": time.perf_counter() - began, **extra}


def write_shard(path: Path, values: dict[str, np.ndarray]) -> str:
    """Write the shard atomically; its checksum (of the bytes written)."""
    buffer = io.BytesIO()
    np.savez(buffer, **values)
    data = buffer.getvalue()
    atomic_write(path, lambda f: f.write(data))
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def read_shard(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


# ----------------------------------------------------------------------------- labels of another alignment

# Options a label file may have been made with otherwise and still be shifted to a labelling: its alignment and how
# it was computed (chunks, batches, device: the same values up to rounding). The teacher and the input are compared
# by their fingerprint and content, not by how their paths were spelled.
REALIGN_FREE = ("align", "given_offsets", "chunk_size", "batch_size", "device", "teacher", "input")
OPTION_NAMES = {"teacher_fingerprint": "teacher (its weights)", "input_content": "input (its configurations)",
                "head": "--head", "spread": "--no-force-spread", "per_atom_spread": "--per-atom-spread",
                "atom_energies": "--atom-energies", "hvp": "--hvp"}


def changed_options(old: dict, new: dict) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def outputs_of(outputs: Outputs) -> list[str]:
    """The labels a file of these outputs holds."""
    keys = [ENERGY, ENERGY_STD, FORCES]
    keys += [FORCES_STD] if outputs.spread else []
    keys += [FORCES_STD_ATOMS] if outputs.spread and outputs.per_atom else []
    keys += [ATOM_ENERGIES] if outputs.atom_energies else []
    return keys + ([HVP, HVP_PROBE] if outputs.hvp is not None else [])


def realignable(candidates: Sequence[str | os.PathLike], options: dict, outputs: Outputs, n_labelled: int,
                output: Path) -> tuple[Path | None, dict[str, str]]:
    """The first of ``candidates`` (finished label files) that :func:`realigned_shards` can shift to a labelling with
    ``options`` of ``n_labelled`` configurations, and why each one before it cannot (file: the reason)."""
    refused = {}
    for candidate in map(Path, candidates):
        reason = _refusal(candidate, options, outputs, n_labelled, output)
        if reason is None:
            return candidate, refused
        refused[str(candidate)] = reason
    return None, refused


def _refusal(candidate: Path, options: dict, outputs: Outputs, n_labelled: int, output: Path) -> str | None:
    import h5py

    if not candidate.is_file():
        return "not found"
    if candidate.resolve() == output.resolve():
        return "the output itself"
    try:
        with h5py.File(candidate, "r") as f:
            found = f.attrs.get("teacher.format")
            if found != FORMAT:
                return f"not a label file of kdframe data teacher-label ({FORMAT})" if found is None else \
                    f"format {found}, not {FORMAT}"
            theirs = json.loads(f.attrs["teacher.options"])
            json.loads(f.attrs["teacher.offsets"])
            missing = [k for k in outputs_of(outputs) if f"labels/{k}" not in f]
            rows = len(f["atom_ptr"]) - 1
    except (OSError, KeyError, ValueError) as exc:
        return f"unreadable ({exc})"
    changed = changed_options({k: v for k, v in theirs.items() if k not in REALIGN_FREE},
                              {k: v for k, v in options.items() if k not in REALIGN_FREE})
    if changed:
        return "made with another " + ", ".join(OPTION_NAMES.get(k, k) for k in changed)
    if missing:
        return f"lacks {', '.join(missing)}"
    if rows != n_labelled:
        return f"{rows} configurations, not the {n_labelled} to label"
    return None


def realigned_shards(earlier: Path, offsets: Sequence[float] | None, dataset, ranges, skip: np.ndarray, parts: Path,
                     outputs: Outputs, done: set[int]) -> Iterator[dict]:
    """Write the shards (but those in ``done``) of a labelling with ``offsets`` from ``earlier``, a label file of the
    same teacher and configurations with other offsets (:func:`realignable`); yield their journal records.

    Offsets are added to every member's reference energies (:func:`apply_offsets`), so the members' mean energy
    moves by the sum of its atoms' offset changes and each atom energy by its element's: the same values as labelling
    again, up to rounding, without running the teacher. Each chunk's species and positions are checked against the
    input's."""
    import h5py

    def not_this_input(what: str) -> DataError:
        return DataError(f"{earlier}: {what}; not labels of this input: leave it out of the files to realign from "
                         "(--realign, or run_dir/knowledge of a run)")

    try:
        with h5py.File(earlier, "r") as f:
            old = {int(z): v for z, v in json.loads(f.attrs["teacher.offsets"]).items()}
            new = {z: float(v) for z, v in enumerate(offsets or ())}
            width = max([*old, *new, int(dataset.elements().max())]) + 1
            shift = np.array([new.get(z, 0.0) - old.get(z, 0.0) for z in range(width)])
            ptr = f["atom_ptr"][()].astype(np.int64)
            labels = f["labels"]
            row = 0
            for index, (start, stop) in enumerate(ranges):
                began = time.perf_counter()
                ok = ~skip[start:stop]
                local = np.flatnonzero(ok)
                rows = slice(row, row + len(local))
                row += len(local)
                if index in done:
                    continue
                first, last = ptr[rows.start], ptr[rows.stop]
                n_atoms = dataset.n_atoms[start:stop].astype(np.int64)
                cptr = np.concatenate([[0], np.cumsum(n_atoms)])
                atoms = np.concatenate([np.arange(cptr[c], cptr[c + 1]) for c in local] or [np.zeros(0, np.int64)])
                batch = dataset.batch(local + start, labels=())
                species = f["species"][first:last].astype(np.int64)
                if (not np.array_equal(species, batch.species.numpy())
                        or not np.allclose(f["positions"][first:last], batch.positions.detach().double().numpy(),
                                           rtol=0, atol=1e-6)):
                    raise not_this_input(f"configurations {start}-{stop - 1} differ from the input's")
                conf = np.repeat(np.arange(len(local)), n_atoms[local])
                values = empty_shard(ok, int(cptr[-1]), outputs)
                values["energy"][local] = labels[ENERGY][rows] + np.bincount(conf, shift[species], len(local))
                values["forces"][atoms] = labels[FORCES][first:last]
                for key, label in (("energy_std", ENERGY_STD), ("forces_std", FORCES_STD)):
                    if key in values:
                        values[key][local] = labels[label][rows]
                if "forces_std_atoms" in values:
                    values["forces_std_atoms"][atoms] = labels[FORCES_STD_ATOMS][first:last]
                if "atom_energies" in values:
                    values["atom_energies"][atoms] = labels[ATOM_ENERGIES][first:last] + shift[species]
                for key, label in (("hvp", HVP), ("hvp_probe", HVP_PROBE)):  # offsets do not move curvature
                    if key in values:
                        values[key][atoms] = labels[label][first:last]
                checksum = write_shard(parts / shard_name(index), values)
                yield chunk_record(index, start, stop, checksum, len(local), began, realigned_from=str(earlier))
    except (OSError, KeyError) as exc:
        raise not_this_input(f"unreadable ({exc})") from None


# ----------------------------------------------------------------------------- journal


def finished(done: dict[int, dict], parts: Path) -> set[int]:
    """The chunks of ``done`` (their journal records) whose shard is in ``parts`` with the recorded checksum."""
    return {index for index, record in done.items() if (parts / shard_name(index)).is_file()
            and f"sha256:{file_sha256(parts / shard_name(index))}" == record["checksum"]}


def parts_dir(output: str | os.PathLike) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".parts")


def read_journal(path: Path) -> tuple[dict | None, dict[int, dict]]:
    """(the first run record, the last record of each finished chunk); a torn last line (kill -9) is ignored."""
    header, chunks = None, {}
    for record in journal_records(path):
        if record.get("type") == "run" and header is None:
            header = record
        elif record.get("type") == "chunk":
            chunks[int(record["index"])] = record
    return header, chunks


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    make_dir(directory)
    with open(directory / LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunStateError(f"{directory}: another process is labelling into this output") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- workers

_WORKER: dict[str, Any] = {}


def _init_worker(pickled: bytes, fingerprint: str, offsets: list[float] | None, head: int, input_path: str,
                 confs: list[int] | None, parent: int) -> None:
    """A worker: one thread; the parent's (unaligned) teacher, sent pickled, so that a teacher only the parent can
    load (a model of an architecture registered at run time) labels in workers too."""
    from .labelling import THREAD_VARIABLES, die_with_parent

    die_with_parent(parent)
    for var in THREAD_VARIABLES:
        os.environ[var] = "1"
    torch.set_num_threads(1)
    teacher: Teacher = pickle.loads(pickled)  # this worker's own tensors: the offsets below are added in place
    if teacher.fingerprint() != fingerprint:
        raise RunStateError(f"teacher {teacher.name}: changed on its way to a worker process (fingerprint "
                            f"{teacher.fingerprint()}, expected {fingerprint})")
    if offsets is not None:
        apply_offsets(teacher, np.asarray(offsets), head)
    _WORKER.update(predictor=MemberPredictor(teacher, head), dataset=open_input(input_path, confs), confs=confs)


def _worker_chunk(index: int, start: int, stop: int, skip: np.ndarray, shard: str, batch_size: int,
                  outputs: Outputs) -> dict:
    began = time.perf_counter()
    values = label_chunk(_WORKER["predictor"], _WORKER["dataset"], start, stop, skip, batch_size, outputs,
                         _WORKER["confs"])
    return chunk_record(index, start, stop, write_shard(Path(shard), values), int(values["ok"].sum()), began)


# ----------------------------------------------------------------------------- the run


@dataclass
class Summary:
    """What one :func:`teacher_label` call did."""

    output: Path
    configurations: int = 0
    labelled: int = 0
    skipped: dict[str, dict[str, Any]] = field(default_factory=dict)
    chunks: int = 0
    resumed: int = 0
    seconds: float = 0.0  # labelling only (not loading nor merging)
    computed: int = 0  # configurations labelled by this call
    offsets: dict[int, float] = field(default_factory=dict)
    realigned: int = 0  # chunks shifted from labels of another alignment instead of labelled
    realigned_from: Path | None = None

    @property
    def throughput(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else float("nan")

    def skipped_line(self) -> str:
        if not self.skipped:
            return "skipped: none"
        return "skipped (elements the teacher does not cover): " + ", ".join(
            f"{name} ({e['configurations']} configurations; {', '.join(e['elements'])})"
            for name, e in sorted(self.skipped.items()))


def teacher_label(input_path: str | os.PathLike, output: str | os.PathLike, spec: TeacherSpec, *,
                  align_to: str | os.PathLike | None = None, energy_key: str | None = None, head: str | None = None,
                  chunk_size: int = CHUNK, batch_size: int = BATCH, device: str = "cpu", workers: int = 0,
                  spread: bool = True, per_atom: bool = False, atom_energies: bool = False,
                  hvp: ProbeSettings | None = None, force: bool = False,
                  keep_parts: bool = False, progress: bool = False, offsets: Sequence[float] | None = None,
                  confs: Sequence[int] | None = None, realign_from: Sequence[str | os.PathLike] = (),
                  realign_required: bool = False) -> Summary:
    """Label every configuration of ``input_path`` (or only those at the indices ``confs``, in their order) with the
    teacher ``spec``; OUTPUT as a packed file of them. Resumable.

    ``hvp``: also the teacher's H·v along each configuration's fixed probe of these settings.

    ``offsets`` (eV per atomic number) are per-element energy offsets already fitted elsewhere (a run's teacher
    alignment), used instead of fitting them to ``align_to``.

    ``realign_from``: label files made earlier; the first one of the same teacher, configurations and outputs under
    other offsets is shifted to these offsets (:func:`realigned_shards`) instead of running the teacher again; with
    ``realign_required`` none of them fitting is an error (otherwise each is named with the reason and the teacher
    labels)."""
    from .data.packed import check_target

    input_path, output = Path(input_path), Path(output)
    for option, value in (("--chunk-size", chunk_size), ("--batch-size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(option, f"{value!r} is not a positive integer")
    if not isinstance(workers, int) or workers < 0:
        raise ConfigError("--workers", f"{workers!r} (valid: 0, 1, 2, ...)")
    if workers and torch.device(device).type != "cpu":
        raise ConfigError("--workers", f"worker processes label on the CPU; with --device {device} use one process "
                                       "(--workers 0)")
    if offsets is not None and align_to is not None:
        raise ConfigError("--align-to", "give fitted offsets or --align-to, not both")
    if (align_to is None) != (energy_key is None):
        raise ConfigError("--align-to", "give --align-to DATA together with --energy-key KEY (the ground truth's "
                                        "energies the offsets are fitted to)")
    if per_atom and not spread:
        raise ConfigError("--per-atom-spread", "needs the members' forces (drop --no-force-spread)")
    if hvp is not None and hvp.regime != "fixed":
        raise ConfigError("--hvp", f"probes of regime {hvp.regime!r} are drawn anew for every minibatch and cannot be "
                                   "labelled ahead (valid: fixed)")
    if not input_path.is_file():
        raise DataError(f"{input_path}: data file not found")
    check_target(input_path, output, overwrite=True)
    parts = parts_dir(output)
    if output.exists() and not force and not (parts / JOURNAL).exists():
        raise DataError(f"{output}: exists (valid: another path, or --force to replace it)")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", f"{device}: no CUDA device available", ["cpu"])

    confs = None if confs is None else [int(i) for i in confs]  # plain ints for the worker processes
    dataset = open_input(input_path, confs)
    if len(dataset) == 0:
        raise DataError(f"{input_path}: no configurations")
    teacher = spec.load()
    head_index = teacher.model.head_index(head, "--head") if head else 0
    fingerprint = teacher.fingerprint()
    if _cells_of(dataset):
        flat = [m.architecture.name for m in teacher.members if not m.architecture.periodic]
        if flat and getattr(dataset, "pbc", None) is not None and bool(np.asarray(dataset.pbc).any()):
            raise DataError(f"{input_path}: periodic configurations, but the teacher's architecture {flat[0]!r} does "
                            "not handle periodic cells")
    if head_index and align_to is not None:
        raise ConfigError("--head", f"offsets are fitted to the first head's energies; --align-to with --head {head} "
                                    "is not supported (valid: the first head, "
                                    f"{teacher.members[0].heads[0]!r})")
    species = covered_species(teacher)
    skip, skipped = uncovered(dataset, species)
    if skip.all():
        raise DataError(f"{input_path}: no configuration has only elements the teacher {spec.name} covers "
                        f"({', '.join(_element_symbol(z) for z in species)})")
    align_key = None
    align_data = None
    if align_to is not None:
        from .data.readers import read_dataset

        align_data = read_dataset(align_to, {"energy": energy_key})
        align_key = {"path": str(Path(align_to).resolve()), "energy_key": energy_key,
                     "content": align_data.content_hash(labels=["energy"])}
    options = {"format": FORMAT, "input": input_path.name, "input_content": dataset.content_hash(labels=()),
               "teacher": spec.describe(), "teacher_fingerprint": fingerprint, "head": head_index,
               "align": align_key, "given_offsets": None if offsets is None else [float(v) for v in offsets],
               "chunk_size": chunk_size, "batch_size": batch_size,
               "device": torch.device(device).type, "spread": spread, "per_atom_spread": per_atom}
    if atom_energies:  # only when asked: runs journalled before the option existed keep their key
        options["atom_energies"] = True
    if hvp is not None:
        options["hvp"] = hvp.model_dump()
    outputs = Outputs(spread, per_atom, atom_energies, hvp)
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]
    ranges = chunk_ranges(len(dataset), chunk_size)
    summary = Summary(output, len(dataset), int((~skip).sum()), skipped, len(ranges))
    for name, entry in sorted(skipped.items()):
        note(f"{input_path}: molecule {name}: {entry['configurations']} configuration(s) skipped: element(s) "
             f"{', '.join(entry['elements'])} not covered by the teacher {spec.name} (it covers "
             f"{', '.join(_element_symbol(z) for z in species)})")

    earlier, refused = realignable(realign_from, options, outputs, summary.labelled, output)
    unfinished = len(read_journal(parts / JOURNAL)[1]) < len(ranges)
    if earlier is None and realign_from and unfinished:
        reasons = "; ".join(f"{k}: {v}" for k, v in refused.items())
        if realign_required:
            raise ConfigError("--realign", reasons, ["a file of kdframe data teacher-label with this teacher, input, "
                                                     "--head and outputs"])
        note(f"not realigned from earlier labels ({reasons}): the teacher labels {input_path}")

    with locked(parts):
        journal = parts / JOURNAL
        header, done = read_journal(journal)
        if header is not None and header.get("key") != key:
            old = header.get("options", {})
            changed = changed_options(old, options)
            raise RunStateError(f"{parts}: an unfinished labelling with another teacher, input or options (changed: "
                                f"{', '.join(changed) or 'the run key'}); run it again as it was, or delete {parts} "
                                "to start over")
        if header is None:
            offsets = None if offsets is None else [float(v) for v in offsets]
            if align_data is not None:
                if align_data.elements().tolist() and set(align_data.elements().tolist()) - set(species):
                    raise DataError(f"{align_to}: elements {sorted(set(align_data.elements().tolist()) - set(species))} "
                                    f"are outside the teacher's set {species}; align to data the teacher covers")
                fitting = copy.deepcopy(teacher)  # offsets are applied below, the same way on a resumed run
                fitting.model.to(device)
                offsets = align_reference_energies(fitting, align_data, "energy", device, batch_size).tolist()
                del fitting
            header = {"type": "run", "key": key, "options": options, "offsets": offsets}
            append_journal(journal, header)
        offsets = header.get("offsets")
        verified = finished(done, parts)
        if earlier is not None and len(verified) < len(ranges):  # (again after an interruption: the chunks left)
            for record in realigned_shards(earlier, offsets, dataset, ranges, skip, parts, outputs, set(verified)):
                append_journal(journal, record)
                done[record["index"]] = record
                verified.add(record["index"])  # its shard just written with this checksum
        # Sent to the worker processes as bytes: multiprocessing would send its tensors as one shared-memory copy
        # for all workers, and the offsets a worker adds in place would reach the others' teachers too.
        unaligned = pickle.dumps(teacher) if workers else None
        if offsets is not None:
            apply_offsets(teacher, np.asarray(offsets), head_index)
            summary.offsets = {int(z): float(v) for z, v in enumerate(offsets) if v != 0.0}
            missing = sorted(set(dataset.elements().tolist()) - set(summary.offsets) - {0})
            if missing:
                warn(f"{input_path}: element(s) {', '.join(_element_symbol(z) for z in missing)} absent from "
                     f"{align_to or 'the offsets given'}: their energies keep the teacher's own reference energies")
        todo = []
        for index in range(len(ranges)):
            record = done.get(index)
            if index in verified:
                if "realigned_from" in record:
                    summary.realigned += 1
                    summary.realigned_from = Path(record["realigned_from"])
                else:
                    summary.resumed += 1
                continue
            if record is not None:
                note(f"{parts / shard_name(index)}: missing or not matching its checksum; labelling chunk {index} "
                     "again")
            todo.append(index)

        began = time.perf_counter()
        for record in _label_chunks(todo, ranges, parts, spec, teacher, unaligned, fingerprint, offsets, head_index, input_path,
                                    confs, dataset, skip, batch_size, device, workers, outputs, progress):
            append_journal(journal, record)
            summary.computed += record["labelled"]
        summary.seconds = time.perf_counter() - began

        _merge(output, dataset, ranges, parts, spec, teacher, options, summary, outputs)
        if not keep_parts:
            for index in range(len(ranges)):
                (parts / shard_name(index)).unlink(missing_ok=True)
            journal.unlink(missing_ok=True)
    if not keep_parts:
        (parts / LOCK).unlink(missing_ok=True)
        try:
            parts.rmdir()
        except OSError:
            pass
    return summary


def _label_chunks(todo, ranges, parts, spec, teacher, unaligned, fingerprint, offsets, head, input_path, confs, dataset,
                  skip, batch_size, device, workers, outputs: Outputs, progress) -> Iterator[dict]:
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc=f"labelling with {spec.name}", unit="chunk", disable=not progress, file=sys.stderr)
    try:
        if workers <= 0 or len(todo) <= 1:
            predictor = MemberPredictor(teacher, head, device)
            for index in todo:
                start, stop = ranges[index]
                began = time.perf_counter()
                values = label_chunk(predictor, dataset, start, stop, skip, batch_size, outputs, confs)
                checksum = write_shard(parts / shard_name(index), values)
                bar.update()
                yield chunk_record(index, start, stop, checksum, int(values["ok"].sum()), began)
            return
        import multiprocessing

        from .labelling import one_thread_children

        with one_thread_children():
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                                     initargs=(unaligned, fingerprint, offsets, head, str(input_path), confs,
                                               os.getpid())) as pool:
                queue = iter(todo)
                running = {}

                def submit(index: int) -> None:
                    start, stop = ranges[index]
                    running[pool.submit(_worker_chunk, index, start, stop, skip, str(parts / shard_name(index)),
                                        batch_size, outputs)] = index

                for index in queue:  # a bounded number in flight, so an interrupt stops soon
                    submit(index)
                    if len(running) >= 2 * workers:
                        break
                while running:
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        running.pop(future)
                        try:
                            record = future.result()
                        except BrokenProcessPool:
                            raise LabellingError(f"{parts}: a worker process ended unexpectedly (killed, out of memory, "
                                                 "or its error is printed above); finished chunks are kept: run the "
                                                 "same command again to resume") from None
                        bar.update()
                        yield record
                        following = next(queue, None)
                        if following is not None:
                            submit(following)
    finally:
        bar.close()


def _merge(output: Path, dataset, ranges, parts: Path, spec: TeacherSpec, teacher: Teacher, options: dict,
           summary: Summary, outputs: Outputs) -> None:
    """Every shard, in order, into OUTPUT through the packed writer (atomic): runs of consecutive configurations of
    one molecule with the same atoms are added together (the writer keeps one molecule per name); cells, pbc and
    origins of the input are passed through."""
    from .data.packed import PackedWriter

    kinds = {ENERGY: PER_CONF, ENERGY_STD: PER_CONF, FORCES: PER_ATOM}
    if outputs.spread:
        kinds[FORCES_STD] = PER_CONF
    if outputs.per_atom:
        kinds[FORCES_STD_ATOMS] = PER_ATOM
    if outputs.atom_energies:
        kinds[ATOM_ENERGIES] = PER_ATOM
    if outputs.hvp is not None:
        kinds[HVP] = kinds[HVP_PROBE] = PER_ATOM
    attrs = {
        "teacher.format": FORMAT, "teacher.name": spec.name, "teacher.source": spec.describe(),
        "teacher.fingerprint": options["teacher_fingerprint"], "teacher.members": len(teacher.members),
        "teacher.species": json.dumps(covered_species(teacher)), "teacher.head": options["head"],
        "teacher.input": options["input"], "teacher.input_content": options["input_content"],
        "teacher.aligned_to": json.dumps(options["align"]),
        "teacher.offsets": json.dumps({str(z): v for z, v in summary.offsets.items()}),
        "teacher.skipped": json.dumps(summary.skipped, sort_keys=True),
        "teacher.options": json.dumps(options, sort_keys=True),
        "teacher.units": "eV (energies, atom energies), eV/Å (forces), eV/Å² (hvp; its probes have unit norm)",
        "teacher.spread": "energy_std: std of the members' energies; forces_std: sqrt(mean over atoms and members of "
                          "|F_m - mean F|^2); forces_std_atoms: members' std of each force component; "
                          "atom_energies: the members' mean per-atom energies, summing to energy",
    }
    if summary.realigned:
        attrs["teacher.realigned_from"] = f"{summary.realigned_from}"
        attrs["teacher.realigned_chunks"] = f"{summary.realigned} of {len(ranges)}"
    writer = PackedWriter(output, kinds, source=f"{Path(options['input']).stem} labelled by {spec.name}", attrs=attrs,
                          atom_shapes={ATOM_ENERGIES: ()})
    periodic = _cells_of(dataset)
    origins = getattr(dataset, "origin", None)
    names = dataset.molecule_names
    pending: dict[str, Any] = {}

    def flush() -> None:
        if not pending:
            return
        labels = {ENERGY: np.array(pending[ENERGY]), ENERGY_STD: np.array(pending[ENERGY_STD]),
                  FORCES: np.stack(pending[FORCES])}
        if outputs.spread:
            labels[FORCES_STD] = np.array(pending[FORCES_STD])
        if outputs.per_atom:
            labels[FORCES_STD_ATOMS] = np.stack(pending[FORCES_STD_ATOMS])
        if outputs.atom_energies:
            labels[ATOM_ENERGIES] = np.stack(pending[ATOM_ENERGIES])
        if outputs.hvp is not None:
            labels[HVP], labels[HVP_PROBE] = np.stack(pending[HVP]), np.stack(pending[HVP_PROBE])
        extra: dict[str, Any] = {}
        if periodic:
            extra.update(cell=np.stack(pending["cell"]), pbc=np.stack(pending["pbc"]))
        if origins is not None:
            extra["origin"] = list(pending["origin"])
        writer.add(names[pending["molecule"]], pending["species"], np.stack(pending["positions"]), labels, **extra)
        pending.clear()

    with writer:
        for index, (start, stop) in enumerate(ranges):
            shard = read_shard(parts / shard_name(index))
            ok = np.flatnonzero(shard["ok"])
            if not len(ok):
                continue
            n_atoms = dataset.n_atoms[start:stop].astype(np.int64)
            ptr = np.concatenate([[0], np.cumsum(n_atoms)])
            batch = dataset.batch(np.arange(start, stop), labels=())
            species, positions = batch.species.numpy(), batch.positions.detach().double().numpy()
            molecule = dataset.molecule[start:stop]
            for c in ok:
                atoms = slice(ptr[c], ptr[c + 1])
                z = species[atoms]
                if not pending or pending["molecule"] != molecule[c] or not np.array_equal(pending["species"], z):
                    flush()
                    pending.update({"molecule": int(molecule[c]), "species": z, "positions": [], ENERGY: [],
                                    ENERGY_STD: [], FORCES: [], FORCES_STD: [], FORCES_STD_ATOMS: [], ATOM_ENERGIES: [],
                                    HVP: [], HVP_PROBE: [], "cell": [], "pbc": [], "origin": []})
                pending["positions"].append(positions[atoms])
                pending[ENERGY].append(shard["energy"][c])
                pending[ENERGY_STD].append(shard["energy_std"][c])
                pending[FORCES].append(shard["forces"][atoms])
                if outputs.spread:
                    pending[FORCES_STD].append(shard["forces_std"][c])
                if outputs.per_atom:
                    pending[FORCES_STD_ATOMS].append(shard["forces_std_atoms"][atoms])
                if outputs.atom_energies:
                    pending[ATOM_ENERGIES].append(shard["atom_energies"][atoms])
                if outputs.hvp is not None:
                    pending[HVP].append(shard["hvp"][atoms])
                    pending[HVP_PROBE].append(shard["hvp_probe"][atoms])
                if periodic:
                    pending["cell"].append(batch.cell[c].numpy() if batch.cell is not None else np.zeros((3, 3)))
                    pending["pbc"].append(batch.pbc[c].numpy() if batch.pbc is not None else np.zeros(3, dtype=bool))
                if origins is not None:
                    pending["origin"].append(str(origins[start + c]))
        flush()


def summary_text(summary: Summary) -> str:
    lines = [f"{summary.output}: {summary.labelled}/{summary.configurations} configurations labelled "
             f"({summary.chunks} chunks, {summary.resumed} already done)"
             + (f"; {summary.computed} in {summary.seconds:.1f} s, {summary.throughput:.1f} configurations/s"
                if summary.computed else ""),
             summary.skipped_line()]
    if summary.realigned:
        lines.append(f"{summary.realigned} chunk(s) realigned from {summary.realigned_from} (its labels shifted to "
                     "these offsets, not relabelled)")
    if summary.offsets:
        lines.append("aligned: per-element offsets (eV) " + ", ".join(
            f"{_element_symbol(z)} {v:+.6f}" for z, v in sorted(summary.offsets.items())))
    return "\n".join(lines)


def spread_of(forces: np.ndarray, n_atoms: np.ndarray) -> np.ndarray:
    """``teacher.forces_std`` from members' forces (M, A, 3) of configurations of ``n_atoms`` atoms (for tests)."""
    dev = forces - forces.mean(0)
    conf = np.repeat(np.arange(len(n_atoms)), n_atoms)
    return np.sqrt(np.bincount(conf, (dev ** 2).sum(-1).mean(0), len(n_atoms)) / n_atoms)


__all__ = ["TeacherSpec", "Summary", "teacher_label", "summary_text", "apply_offsets", "MemberPredictor"]
