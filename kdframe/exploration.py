"""On-policy exploration: a student's own MD, watched by its teachers, and the frames worth labelling.

The student runs molecular dynamics (ASE: Langevin NVT or velocity-Verlet NVE). Every ``every`` steps a frame
is kept and the teacher ensemble is asked about it: its members' force spread (where knowledge is missing) and
the student's force deviation from the ensemble mean (where the student is wrong). A trajectory stops at a
failure: two atoms closer than ``min_distance``, a non-finite energy, or a teacher spread above ``max_spread``;
the frames kept until then stay, with the last configuration before the failure. :func:`select_frames` then
picks the frames of largest deviation (or spread) per round, spaced along each trajectory so that one event
does not fill the round. Forces and spreads are in eV/Å, energies in eV.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pydantic
import torch

from .batch import Batch
from .config import Strict
from .errors import ArchitectureError
from .potential import Ensemble, Potential
from .teacher import Teacher
from .teacher_labelling import MemberPredictor, force_spread


class Dynamics(Strict):
    """How each trajectory runs."""

    ensemble: Literal["langevin", "nve"] = "langevin"
    temperatures_K: list[pydantic.PositiveFloat] = pydantic.Field([300.0], min_length=1)  # a trajectory per system,
    # temperature and replica
    timestep_fs: pydantic.PositiveFloat = 0.5
    steps: pydantic.PositiveInt = 400
    every: pydantic.PositiveInt = 10  # keep a frame every this many steps
    friction_per_fs: pydantic.PositiveFloat = 0.01  # Langevin
    replicas: pydantic.PositiveInt = 1  # velocity (and Langevin noise) seeds per system and temperature
    min_distance: pydantic.PositiveFloat = 0.5  # Å: closer atoms are a failure
    max_spread: pydantic.PositiveFloat = 1.0  # eV/Å: a teacher force spread above this is a failure

    @pydantic.model_validator(mode="after")
    def _frames_kept(self) -> "Dynamics":
        if self.every > self.steps:
            raise ValueError(f"every ({self.every}) exceeds steps ({self.steps}): no frame would be kept")
        return self


class Selection(Strict):
    """Which kept frames the teachers label: those of largest ``rank_by`` within the thresholds."""

    rank_by: Literal["deviation", "spread"] = "deviation"
    deviation_above: pydantic.NonNegativeFloat = 0.0  # eV/Å, student vs teacher-mean forces (RMS per atom)
    spread_above: pydantic.NonNegativeFloat = 0.0  # eV/Å, teacher members' force spread
    top_k: pydantic.PositiveInt = 100  # at most this many frames per round
    min_spacing: pydantic.NonNegativeInt = 3  # kept frames of one trajectory this many apart (0: any)


FAILURES = ("close atoms", "non-finite energy", "teacher disagreement")


@dataclass
class Frame:
    """One kept MD frame with the teachers' view of it."""

    trajectory: int
    index: int  # kept-frame number along its trajectory
    time_fs: float
    atoms: "object"  # ase.Atoms (a copy)
    teacher_energy: float
    teacher_forces: np.ndarray  # (n, 3)
    spread: float
    deviation: float


@dataclass
class Trajectory:
    """A finished trajectory: its kept frames, and the failure that stopped it (None: it ran to the end)."""

    system: str
    temperature_K: float
    seed: int
    frames: list[Frame] = field(default_factory=list)
    failure: str | None = None  # what happened, e.g. "atoms closer than 0.5 Å"
    failure_kind: str | None = None  # one of FAILURES
    failed_at_fs: float | None = None
    simulated_fs: float = 0.0


class Watcher:
    """The teacher ensemble's energy, mean forces and force spread, and the student's deviation, for one frame."""

    def __init__(self, teachers: Ensemble | Potential, device: str | torch.device = "cpu"):
        self.predict = MemberPredictor(Teacher(teachers, "exploration teachers"), device=device)

    def __call__(self, atoms, student_forces: np.ndarray) -> tuple[float, np.ndarray, float, float]:
        out = self.predict(Batch.from_atoms([atoms]), spread=True)
        spread = float(force_spread(out["forces_dev"], np.array([len(atoms)]))[0])
        deviation = math.sqrt(float(((student_forces - out["forces"]) ** 2).sum(-1).mean()))
        return float(out["energy"][0]), out["forces"], spread, deviation

    def close(self) -> None:
        self.predict.close()


def run_trajectory(student: Potential, watcher: Watcher, atoms, system: str, temperature_K: float, seed: int,
                   trajectory: int, dynamics: Dynamics, device: str | torch.device = "cpu") -> Trajectory:
    """One MD run of ``student`` from ``atoms`` at ``temperature_K`` (Maxwell-Boltzmann velocities from ``seed``)."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet
    from ase.neighborlist import neighbor_list

    from .calculator import KdframeCalculator

    rng = np.random.default_rng(seed)
    atoms = atoms.copy()
    atoms.calc = KdframeCalculator(student, device=device)
    with warnings.catch_warnings():  # ASE 3.29 deprecates this spelling (same numbers); older ASE lacks the new one
        warnings.simplefilter("ignore", DeprecationWarning)
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    dt = dynamics.timestep_fs * units.fs
    md = (Langevin(atoms, dt, temperature_K=temperature_K, friction=dynamics.friction_per_fs / units.fs, rng=rng,
                   fixcm=False)  # ASE >= 3.28 deprecates its own centre-of-mass fixing in Langevin
          if dynamics.ensemble == "langevin" else VelocityVerlet(atoms, dt))
    result = Trajectory(system, temperature_K, seed)
    previous = atoms.copy()

    def keep(snapshot, forces: np.ndarray, step: int) -> Frame:
        energy, teacher_forces, spread, deviation = watcher(snapshot, forces)
        frame = Frame(trajectory, len(result.frames), step * dynamics.timestep_fs, snapshot, energy, teacher_forces,
                      spread, deviation)
        result.frames.append(frame)
        return frame

    for step in range(1, dynamics.steps + 1):
        result.simulated_fs = step * dynamics.timestep_fs
        try:
            md.run(1)
            energy = atoms.get_potential_energy()
        except ArchitectureError:  # the model's output checks refuse non-finite values on a first call
            energy = math.nan
        kind, failure = (("non-finite energy", "non-finite energy") if not np.isfinite(energy) else
                         ("close atoms", f"atoms closer than {dynamics.min_distance} Å")
                         if len(neighbor_list("i", atoms, dynamics.min_distance)) else (None, None))
        if failure is None and step % dynamics.every == 0:
            snapshot = atoms.copy()
            snapshot.calc = None
            frame = keep(snapshot, atoms.get_forces(), step)
            if frame.spread > dynamics.max_spread:
                kind, failure = "teacher disagreement", f"teacher force spread {frame.spread:.2f} eV/Å > {dynamics.max_spread}"
        if failure is not None:
            result.failure, result.failure_kind, result.failed_at_fs = failure, kind, step * dynamics.timestep_fs
            kept_already = step > 1 and (step - 1) % dynamics.every == 0
            if kind != "teacher disagreement" and not kept_already:  # the last configuration before the collapse
                keep(previous, KdframeCalculator(student, device=device).get_forces(previous), step - 1)
            break
        previous = atoms.copy()
        previous.calc = None
    return result


def select_frames(trajectories: Sequence[Trajectory], selection: Selection, max_spread: float) -> list[Frame]:
    """The frames to label: within the thresholds (and with a spread the teachers can be trusted at, at most
    ``max_spread``), largest ``rank_by`` first, no two of one trajectory closer than ``min_spacing`` kept frames."""
    candidates = [f for t in trajectories for f in t.frames
                  if f.deviation >= selection.deviation_above and selection.spread_above <= f.spread <= max_spread]
    candidates.sort(key=lambda f: (-getattr(f, selection.rank_by), f.trajectory, f.index))
    chosen: list[Frame] = []
    for frame in candidates:
        if len(chosen) == selection.top_k:
            break
        if all(c.trajectory != frame.trajectory or abs(c.index - frame.index) >= selection.min_spacing for c in chosen):
            chosen.append(frame)
    return sorted(chosen, key=lambda f: (f.trajectory, f.index))
