"""The ``explore`` stage: rounds of student MD, teacher-labelled frames and fine-tuning (on-policy distillation).

Each round: the current student runs MD on the given systems (:mod:`kdframe.exploration`); the frames where it
deviates most from its teachers (within the teachers' trusted spread) are labelled by the teachers (aligned
energies, averaged forces) and added to every earlier round's frames; the student is fine-tuned from its current
weights on its own data plus those frames (their own loss weights and share of every batch), its own loss weights
fixed at the values their schedules end with. Rounds end after
``rounds``, at a round whose MD had no failure (``stop_when_stable``), or when nothing is selected.

Every round is resumable: its frames and summary (``run_dir/exploration/round_N/``) are written atomically and
reused while the student, teachers and settings they came from are unchanged; its fine-tuning is the stage
``explored_N`` (checkpointed like any stage).
"""

from __future__ import annotations

import json
from fnmatch import fnmatch
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pydantic

from ..config import Strict, invalid, resolve_path
from ..data.dataset import PER_ATOM, PER_CONF
from ..data.packed import PackedDataset, PackedWriter
from ..data.readers import read_dataset
from ..errors import ConfigError, DataError, RunStateError
from ..exploration import FAILURES, Dynamics, Selection, Trajectory, Watcher, run_trajectory, select_frames
from ..io import atomic_write_text, file_sha256, make_dir, note
from ..potential import Ensemble, Potential
from ..schedule import make_schedule
from ..student import Source, Student, TrainingOverrides, check_weights, shares_problem
from ..teacher import Teacher
from ..training.trainer import METRICS
from .sweep import read_curve

FRAMES = "explored.h5"  # every round's selected frames so far, teacher-labelled
SUMMARY = "round.json"
LABELS = {"teacher.energy": PER_CONF, "teacher.forces": PER_ATOM, "teacher.forces_std": PER_CONF,
          "student.deviation": PER_CONF}


class Systems(Strict):
    """Starting configurations: the first ``per_molecule`` of each molecule of a file (extxyz, ANI-layout or
    packed, e.g. liquid boxes from ``kdframe data generate --boxes``) whose name matches ``names``, at most
    ``max_systems``."""

    path: str
    names: str = "*"  # shell pattern on molecule names, e.g. "box:*" for the liquid boxes of a generated file
    per_molecule: pydantic.PositiveInt = 1
    max_systems: pydantic.PositiveInt | None = None

    @pydantic.model_validator(mode="after")
    def _exists(self, info: pydantic.ValidationInfo) -> "Systems":
        if not resolve_path(self.path, (info.context or {}).get("config_dir", Path.cwd())).is_file():
            raise invalid(("path",), f"file not found: {self.path} (relative paths are relative to the YAML file)")
        return self


class Explore(Strict):
    """The ``explore`` block of a run (after its student is trained)."""

    SOURCE: ClassVar[str] = "explored"  # the explored frames' name among the student's sources
    # A lower learning rate than a student's first: fine-tuning at it undid the student's energies (docs/workflows.md).
    FINE_TUNING: ClassVar[dict[str, Any]] = {"max_epochs": 20, "lr": 3e-4}

    rounds: int = pydantic.Field(3, ge=1, le=50)
    systems: list[Systems] = pydantic.Field(min_length=1)
    dynamics: Dynamics = Dynamics()
    select: Selection = Selection()
    # Loss weights of the explored frames: forces only by default, as boxes of hundreds of atoms have total-energy
    # residuals that outweigh the small molecules' and pull the per-element energy scale (docs/workflows.md).
    weights: dict[str, Any] = {"energy": 0.0, "forces": 1.0}
    share: float = pydantic.Field(0.25, gt=0, lt=1)  # of every fine-tuning batch
    # Fine-tuning overrides of the student's training settings, each over FINE_TUNING's defaults.
    training: TrainingOverrides = TrainingOverrides()  # type: ignore[valid-type]
    stop_when_stable: bool = True  # a round whose MD had no failure ends exploration (no fine-tuning)

    @pydantic.field_validator("weights")
    @classmethod
    def _known_terms(cls, weights: dict[str, Any]) -> dict[str, Any]:
        return check_weights(weights, {"energy": 0, "forces": 0})

    def check_student(self, student: Student) -> None:
        """The explored frames join the student's sources: their name is free and the shares leave the run's data some."""
        if self.SOURCE in student.sources:
            raise ConfigError(f"student.sources.{self.SOURCE}", "the name is taken by the explored frames; rename it")
        shares = {"explore.share": self.share,
                  **{f"student.sources.{name}.share": source.share for name, source in student.sources.items()}}
        if problem := shares_problem(shares, "the run's data (data.train)"):
            raise ConfigError("explore.share", f"with the student's sources, {problem}")


def starting_systems(explore: Explore, run) -> list[tuple[str, Any]]:
    """(name, ase.Atoms) of every system to run, checked against the run's elements and, for periodic ones, its
    architectures; before any work."""
    systems, species = [], run.species
    for i, block in enumerate(explore.systems):
        found = read_systems(block, run.config_dir)
        if not found:
            raise DataError(f"explore.systems[{i}]: no molecule of {block.path} matches names: {block.names!r}")
        if any(atoms.pbc.any() for _, atoms in found):
            run._check_periodic([f"explore.systems[{i}] ({block.path})"])
        for name, atoms in found:
            extra = sorted(set(atoms.numbers.tolist()) - set(species))
            if extra:
                raise DataError(f"explore.systems[{i}].path ({block.path}): {name.rpartition('#')[0]} has "
                                f"elements {extra} that the run's training data lacks (elements there: {species})")
        systems += found
    return systems


def read_systems(block: Systems, config_dir: Path) -> list[tuple[str, Any]]:
    """(name#k, ase.Atoms) of the configurations ``block`` names in its file (periodic ones with their cell)."""
    from ase import Atoms

    data = read_dataset(resolve_path(block.path, config_dir), {})
    systems: list[tuple[str, Any]] = []
    taken: dict[int, int] = {}
    for c in range(len(data)):
        molecule = int(data.molecule[c])
        if taken.get(molecule, 0) >= block.per_molecule or not fnmatch(data.molecule_names[molecule], block.names):
            continue
        taken[molecule] = taken.get(molecule, 0) + 1
        batch = data.batch(np.array([c]), [])
        periodic = batch.cell is not None
        atoms = Atoms(numbers=batch.species.numpy(), positions=batch.positions.numpy(),
                      cell=batch.cell[0].numpy() if periodic else None, pbc=batch.pbc[0].numpy() if periodic else False)
        systems.append((f"{data.molecule_names[molecule]}#{taken[molecule]}", atoms))
        if len(systems) == block.max_systems:
            break
    return systems


def explore(run, block: Student, start: Path, teachers: Ensemble, settings: Explore, systems: list, seed: int,
            fit: Callable[[str, Student, Path], Potential]) -> list[dict]:
    """Run the rounds on ``systems`` (:func:`starting_systems`, read before any work) from the student saved at
    ``start``; ``fit(stage, block, start)`` fine-tunes one round's student. Returns each round's summary (with
    ``model``, its fine-tuned student's file, for the rounds that fine-tuned)."""
    teacher_print = Teacher(teachers, "teachers").fingerprint()
    systems_print = [file_sha256(resolve_path(block.path, run.config_dir)) for block in settings.systems]
    overrides = {**block.training.model_dump(exclude_none=True), **settings.FINE_TUNING,
                 **settings.training.model_dump(exclude_none=True)}
    fine_tuned = settled(block, last_epoch(start.parent, block.settings(run.config.training).max_epochs))
    fine_tuned = fine_tuned.model_copy(update={"training": TrainingOverrides(**overrides)})
    summaries, current, previous_frames = [], start, None
    for r in range(1, settings.rounds + 1):
        folder = run.dir / "exploration" / f"round_{r}"
        identity = {"student": file_sha256(current), "teachers": teacher_print, "seed": seed + r,
                    "previous": None if previous_frames is None else file_sha256(previous_frames),
                    "systems": systems_print, "settings": settings.model_dump(include={"systems", "dynamics", "select"})}
        summary = _finished_round(folder, identity)
        if summary is None:
            summary = _explore_round(run, current, teachers, systems, settings, seed + r, folder, previous_frames)
            summary = {"identity": identity, "round": r, **summary}
            run.lock()
            atomic_write_text(folder / SUMMARY, json.dumps(summary, indent=1))
        summaries.append(summary)
        if (summary["failed"] == 0 and settings.stop_when_stable) or summary["selected"] == 0:
            hint = ("" if summary["selected"] or not summary["frames_kept"] else " (no kept frame passed explore.select "
                    "within the teachers' trusted spread, explore.dynamics.max_spread)")
            note(f"exploration round {r}: {summary['failed']} of {summary['trajectories']} MD runs failed, "
                 f"{summary['selected']} frames selected; exploration ends{hint}")
            break
        previous_frames = folder / FRAMES
        explored = Source(path=str(previous_frames), energy="teacher.energy", forces="teacher.forces", units="ev",
                          weights=settings.weights, share=settings.share, valid_fraction=0)  # few: all train
        tuned = fine_tuned.model_copy(update={"sources": {**fine_tuned.sources, settings.SOURCE: explored}})
        fit(f"explored_{r}", tuned, current)
        current = run.dir / f"explored_{r}" / "model.pt"
        summary["model"] = str(current)
    return summaries


def last_epoch(stage_dir: Path, default: int) -> int:
    """The epoch a stage's training ended at (its metrics file), ``default`` if it has none."""
    epochs, _ = read_curve(stage_dir / METRICS, "epoch")
    return epochs[-1] if epochs else default


def settled(block: Student, epoch: int) -> Student:
    """``block`` with every loss weight (its own and its sources') fixed at its schedule's value at ``epoch``.

    Fine-tuning continues with the balance the student's training ended with: restarting a schedule (e.g. forces
    10 -> 1 over the epochs) would weigh forces against energies as at its first epoch and undo the energies.
    """
    def at_epoch(weights: dict[str, Any], where: str) -> dict[str, float]:
        return {name: make_schedule(spec, f"{where}.{name}")(epoch) for name, spec in weights.items()}

    sources = {name: source.model_copy(update={"weights": at_epoch(source.weights, f"sources.{name}.weights")})
               for name, source in block.sources.items()}
    return block.model_copy(update={"weights": at_epoch(block.weights, "weights"), "sources": sources})


def _finished_round(folder: Path, identity: dict) -> dict | None:
    """A finished round's summary; None if the round has not finished. A round made from another student, teachers,
    systems or settings is refused (its MD and frames are never silently replaced)."""
    try:
        summary = json.loads((folder / SUMMARY).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RunStateError(f"{folder / SUMMARY}: unreadable ({exc}); delete {folder} to redo this round") from None
    found = summary.get("identity") if isinstance(summary, dict) else None
    wanted = json.loads(json.dumps(identity))
    if found != wanted:
        changed = sorted(k for k in wanted if not isinstance(found, dict) or found.get(k) != wanted[k])
        raise RunStateError(f"{folder}: this exploration round was made with other settings (changed: "
                            f"{', '.join(changed)}); delete {folder.parent} and the explored_* stages to explore "
                            "again, or use a new run_dir")
    if summary["selected"] and not (folder / FRAMES).is_file():
        raise RunStateError(f"{folder / FRAMES}: missing for a finished round; delete {folder} to redo this round")
    return summary


def _explore_round(run, current: Path, teachers: Ensemble, systems: list, settings: Explore, seed: int,
                   folder: Path, previous_frames: Path | None) -> dict:
    """MD of every system x temperature x replica, frame selection, and the labelled frames file."""
    student = Potential.load(current).to(run.device).eval()
    watcher = Watcher(teachers, run.device)
    trajectories: list[Trajectory] = []
    try:
        for name, atoms in systems:
            for temperature in settings.dynamics.temperatures_K:
                for replica in range(settings.dynamics.replicas):
                    trajectories.append(run_trajectory(student, watcher, atoms, name, temperature,
                                                       seed * 100_003 + len(trajectories), len(trajectories),
                                                       settings.dynamics, run.device))
    finally:
        watcher.close()
    chosen = select_frames(trajectories, settings.select, settings.dynamics.max_spread)
    if chosen:
        run.lock()
        make_dir(folder)
        write_frames(folder / FRAMES, chosen, trajectories, previous_frames)
    failed = [t for t in trajectories if t.failure]
    kept = [f for t in trajectories for f in t.frames]
    return {"trajectories": len(trajectories), "failed": len(failed),
            "failures": {kind: sum(t.failure_kind == kind for t in failed) for kind in FAILURES},
            "median_fs_to_failure": float(np.median([t.failed_at_fs for t in failed])) if failed else None,
            "simulated_fs": float(sum(t.simulated_fs for t in trajectories)),
            "frames_kept": len(kept), "selected": len(chosen),
            "mean_spread_kept": _mean([f.spread for f in kept]),
            "mean_deviation_kept": _mean([f.deviation for f in kept]),
            "mean_deviation_selected": _mean([f.deviation for f in chosen]),
            "failed_systems": sorted({t.system for t in failed})}


def _mean(values: list[float]) -> float | None:
    """Mean of the finite values (a frame where the student's forces are not finite has no deviation)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def write_frames(path: Path, chosen: list, trajectories: list[Trajectory], previous: Path | None) -> None:
    """``previous`` frames (an earlier round's file) and the chosen ones, with their teacher labels, as a packed file."""
    with PackedWriter(path, LABELS, source="exploration") as writer:
        if previous is not None:
            data = PackedDataset.open(previous, {k: k for k in LABELS})
            for c in range(len(data)):
                batch = data.batch(np.array([c]), list(LABELS))
                periodic = batch.cell is not None
                writer.add(data.molecule_names[int(data.molecule[c])], batch.species.numpy(),
                           batch.positions.numpy()[None], {k: v.numpy()[None] if LABELS[k] == PER_ATOM else v.numpy()
                                                           for k, v in batch.labels.items()},
                           cell=batch.cell[0].numpy() if periodic else None,
                           pbc=batch.pbc[0].numpy() if periodic else None)
        for frame in chosen:
            atoms = frame.atoms
            periodic = atoms.pbc.any()
            writer.add(trajectories[frame.trajectory].system, atoms.numbers, atoms.positions[None],
                       {"teacher.energy": np.array([frame.teacher_energy]), "teacher.forces": frame.teacher_forces[None],
                        "teacher.forces_std": np.array([frame.spread]), "student.deviation": np.array([frame.deviation])},
                       cell=atoms.cell.array if periodic else None, pbc=atoms.pbc if periodic else None)


def exploration_table(summaries: list[dict]) -> str:
    """A markdown table of the rounds for the run's report."""
    rows = ["| round | MD runs | failed (close atoms / non-finite / teacher disagreement) | median fs to failure | "
            "frames kept | selected | mean deviation kept (eV/Å) | mean teacher spread kept (eV/Å) |",
            "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        fs = "—" if s["median_fs_to_failure"] is None else f"{s['median_fs_to_failure']:.1f}"
        dev = "—" if s["mean_deviation_kept"] is None else f"{s['mean_deviation_kept']:.3f}"
        spread = "—" if s["mean_spread_kept"] is None else f"{s['mean_spread_kept']:.3f}"
        kinds = " / ".join(str(n) for n in s["failures"].values())
        rows.append(f"| {s['round']} | {s['trajectories']} | {s['failed']} ({kinds}) | {fs} | {s['frames_kept']} | "
                    f"{s['selected']} | {dev} | {spread} |")
    return "\n".join(rows)
