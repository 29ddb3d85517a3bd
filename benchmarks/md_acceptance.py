"""MD acceptance suite (``python benchmarks/run.py md``): NVE stability, energy drift, structure and speed of
each model against a reference model (usually the teacher ensemble).

- condensed periodic box (run.py's ``molecular_box``) and gas phase (one conformer of every molecule of the
  bundled extensibility set), ASE velocity Verlet from 300 K Maxwell-Boltzmann velocities at several time steps:
  fraction of runs failed (two atoms closer than ``FAIL_DISTANCE`` or a non-finite energy), time to failure;
- energy drift of the runs that survive: slope of a least-squares line through total energy vs time
  (meV/atom/ps);
- radial distribution functions of the box's surviving runs at one time step, all pairs, intermolecular pairs
  and per element pair, and their Jensen-Shannon distance to the reference's;
- atom-steps per second of every model's MD on the box, timed in interleaved segments in one process.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line  # noqa: E402

from kdframe.errors import ConfigError  # noqa: E402
from kdframe.io import atomic_write  # noqa: E402
from kdframe.potential import Ensemble, Potential  # noqa: E402
from kdframe.report import plt  # noqa: E402

FAIL_DISTANCE = 0.5  # Å: two atoms closer than this end a run
TEMPERATURE_K = 300
GAS_DATA = "bundled:extensibility.h5"


# --- one NVE run ----------------------------------------------------------------------------------
@dataclass
class NVERun:
    """How one NVE run ended. ``failed_fs``: simulated fs at failure (None: it survived); ``bond_collapse``: the
    first pair closer than FAIL_DISTANCE lies inside one molecule (same atom tag); ``drift``: meV/atom/ps (NaN if it
    failed); ``frames``: positions kept for the RDF (survivors only)."""

    failed_fs: float | None
    bond_collapse: bool = False
    drift: float = float("nan")
    frames: list[np.ndarray] = field(default_factory=list)


def energy_drift(times_fs: Sequence[float], energies_ev: Sequence[float], n_atoms: int) -> float:
    """Slope of the least-squares line through total energy vs time, in meV per atom per ps."""
    slope_ev_per_fs = np.polyfit(np.asarray(times_fs, float), np.asarray(energies_ev, float), 1)[0]
    return float(slope_ev_per_fs * 1e3 * 1e3 / n_atoms)


def nve(atoms, calculator, dt_fs: float, steps: int, seed: int, keep_every: int = 0) -> NVERun:
    """NVE from 300 K Maxwell-Boltzmann velocities (net momentum removed); stops at the first failure. Keeps the
    positions every ``keep_every`` steps of the second half (0: none)."""
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.md.verlet import VelocityVerlet
    from ase.neighborlist import neighbor_list

    atoms = atoms.copy()
    atoms.calc = calculator
    with warnings.catch_warnings():  # deprecated in ASE 3.29 (thermalize_momenta, same numbers); older ASE lacks that
        warnings.simplefilter("ignore", DeprecationWarning)
        MaxwellBoltzmannDistribution(atoms, temperature_K=TEMPERATURE_K, rng=np.random.default_rng(seed))
    Stationary(atoms)
    energies = [atoms.get_total_energy()]
    if not np.isfinite(energies[0]):
        return NVERun(0.0)
    dynamics = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    frames = []
    for step in range(1, steps + 1):
        dynamics.run(1)
        energy = atoms.get_total_energy()
        if not np.isfinite(energy):
            return NVERun(step * dt_fs)
        i, j = neighbor_list("ij", atoms, FAIL_DISTANCE)  # minimum image in a periodic box
        if len(i):
            tags = atoms.get_tags()
            return NVERun(step * dt_fs, bool(tags[i[0]] == tags[j[0]]))
        energies.append(energy)
        if keep_every and step > steps // 2 and step % keep_every == 0:
            frames.append(atoms.positions.copy())
    return NVERun(None, drift=energy_drift(np.arange(steps + 1) * dt_fs, energies, len(atoms)), frames=frames)


# --- radial distribution functions ---------------------------------------------------------------
def pair_key(z1: int, z2: int) -> str:
    """'C-H', 'C-O', 'O-H': heavier element first, hydrogen last."""
    from ase.data import chemical_symbols

    a, b = sorted((int(z1), int(z2)), key=lambda z: (z == 1, z))
    return f"{chemical_symbols[a]}-{chemical_symbols[b]}"


def pair_histograms(atoms, frames: Sequence[np.ndarray], r_max: float, bins: int) -> dict[str, np.ndarray]:
    """Counts of atom pairs (each unordered pair once, periodic images included) per distance bin, summed over
    ``frames`` (positions of ``atoms``): keys 'all', 'intermolecular' (different atom tags) and one per element
    pair ('C-H', ...)."""
    from ase.neighborlist import neighbor_list

    edges = np.linspace(0.0, r_max, bins + 1)
    elements = sorted(set(atoms.numbers.tolist()))
    keys = ["all", "intermolecular", *sorted({pair_key(a, b) for a, b in
                                              itertools.combinations_with_replacement(elements, 2)})]
    counts = {key: np.zeros(bins) for key in keys}
    frame = atoms.copy()
    tags, numbers = atoms.get_tags(), atoms.numbers
    for positions in frames:
        frame.positions = positions
        i, j, d = neighbor_list("ijd", frame, r_max)
        once = i < j
        i, j, d = i[once], j[once], d[once]
        counts["all"] += np.histogram(d, edges)[0]
        counts["intermolecular"] += np.histogram(d[tags[i] != tags[j]], edges)[0]
        pairs = np.array([pair_key(a, b) for a, b in zip(numbers[i], numbers[j])]) if len(i) else np.array([])
        for key in keys[2:]:
            counts[key] += np.histogram(d[pairs == key], edges)[0]
    return counts


def box_volume(atoms) -> float:
    """Å³: the cell's volume; for an open cluster of run.py's ``molecular_box``, one grid cell per molecule."""
    if atoms.pbc.all():
        return float(atoms.get_volume())
    return len(set(atoms.get_tags())) * atoms.info["spacing"] ** 3


def rdf(counts: np.ndarray, atoms, n_frames: int, r_max: float) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres, g(r)) of a histogram from :func:`pair_histograms`, against an ideal gas of all the atoms at the
    box's density (:func:`box_volume`)."""
    edges = np.linspace(0.0, r_max, len(counts) + 1)
    shell = 4 / 3 * np.pi * np.diff(edges**3)
    n = len(atoms)
    ideal = 0.5 * n * (n - 1) / box_volume(atoms) * shell * n_frames  # unordered pairs of an ideal gas
    return 0.5 * (edges[1:] + edges[:-1]), counts / ideal


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2: 0 identical, 1 disjoint) of two pair-distance histograms, each normalised to
    sum 1 (the same as normalising g(r) r²); NaN when either is empty."""
    from scipy.spatial.distance import jensenshannon

    if p.sum() == 0 or q.sum() == 0:
        return float("nan")
    return float(jensenshannon(p, q, base=2))


# --- speed ---------------------------------------------------------------------------------------
def atom_steps_per_second(calculators: dict[str, Callable], atoms, steps: int, repeats: int,
                          dt_fs: float = 0.5) -> dict[str, float]:
    """Atom-steps per second of ASE velocity Verlet on ``atoms`` per calculator: ``steps`` steps per segment,
    segments of the models interleaved, one warm-up round, median of ``repeats``."""
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    times: dict[str, list[float]] = {name: [] for name in calculators}
    for round_ in range(repeats + 1):
        for name, calculator in calculators.items():
            system = atoms.copy()
            system.calc = calculator
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                MaxwellBoltzmannDistribution(system, temperature_K=TEMPERATURE_K, rng=np.random.default_rng(0))
            dynamics = VelocityVerlet(system, timestep=dt_fs * units.fs)
            start = time.perf_counter()
            dynamics.run(steps)
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: len(atoms) * steps / statistics.median(t) for name, t in times.items()}


# --- inputs --------------------------------------------------------------------------------------
def load_pretrained(entries: Sequence[str], device: torch.device) -> dict[str, Ensemble]:
    """``NAME=KEY`` (or ``KEY``) -> the registered pretrained ensemble KEY (``kdframe models fetch KEY``)."""
    from kdframe.plugins import registry

    known = registry().pretrained
    models = {}
    for entry in entries:
        name, _, key = entry.partition("=")
        key = key or name
        if key not in known:
            raise ConfigError("--pretrained", f"{key!r} is not a registered pretrained ensemble", known)
        models[name] = known[key]().to(device).eval()
    return models


def gas_molecules() -> list[tuple[str, object]]:
    """(name, ase.Atoms) of the first conformer of each molecule of the bundled extensibility set (for every
    molecule there its first optimised conformer, origin 'opt:c0')."""
    import ase

    from kdframe.config import resolve_path
    from kdframe.data.readers import read_dataset

    data = read_dataset(resolve_path(GAS_DATA, Path.cwd()), {})
    _, first = np.unique(data.molecule, return_index=True)
    molecules = []
    for c in sorted(first):
        atoms = slice(data.atom_ptr[c], data.atom_ptr[c + 1])
        molecules.append((data.molecule_names[data.molecule[c]],
                          ase.Atoms(numbers=data.species[atoms], positions=data.positions[atoms])))
    return molecules


# --- the suite -----------------------------------------------------------------------------------
def fmt(value: float, spec: str = ".2f") -> str:
    return "—" if value is None or not np.isfinite(value) else format(value, spec)


def stability_row(name: str, dt: float, runs: list[NVERun], detail: str) -> str:
    """| model | dt | fraction failed | median time to failure | detail | median |drift| | of one model and time step."""
    failures = [r.failed_fs for r in runs if r.failed_fs is not None]
    drifts = [abs(r.drift) for r in runs if r.failed_fs is None]
    return (f"| {name} | {dt} | {len(failures) / len(runs):.2f} | {fmt(np.median(failures) if failures else None, '.1f')} "
            f"| {detail} | {fmt(np.median(drifts) if drifts else None, '.3g')} |")


def split_frames(runs: list[list[np.ndarray]]) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    """Two halves of a model's frames for its noise floor: alternate runs, or alternate frames of a single run."""
    if len(runs) > 1:
        return [f for run in runs[::2] for f in run], [f for run in runs[1::2] for f in run]
    if runs and len(runs[0]) > 1:
        return runs[0][::2], runs[0][1::2]
    return None


def structure_rows(box, frames: dict[str, list[list[np.ndarray]]], reference: str, r_max: float, bins: int):
    """(pair histograms and frame counts per model, column keys, markdown rows of JS distances to the reference,
    the reference's noise floor first)."""
    histograms = {name: pair_histograms(box, [f for run in runs for f in run], r_max, bins)
                  for name, runs in frames.items()}
    n_frames = {name: sum(map(len, runs)) for name, runs in frames.items()}
    keys = list(histograms[reference])
    rows = [f"| {name} | {n_frames[name]} | " + " | ".join(fmt(js_distance(hist[k], histograms[reference][k]), ".4f")
                                                          for k in keys) + " |"
            for name, hist in histograms.items() if name != reference]
    halves = split_frames(frames[reference])
    if halves:
        first, second = (pair_histograms(box, half, r_max, bins) for half in halves)
        rows.insert(0, f"| {reference}: one half of its frames vs the other (noise floor) | {n_frames[reference]} | "
                    + " | ".join(fmt(js_distance(first[k], second[k]), ".4f") for k in keys) + " |")
    return histograms, n_frames, keys, rows


def md_report(args: argparse.Namespace, models: dict[str, Potential | Ensemble], reference: str, box,
              box_text: str, device: torch.device, provenance: str) -> str:
    """Run the suite on ``models`` (``reference`` among them); write the plots beside ``args.out``; return the
    markdown."""
    from kdframe.calculator import KdframeCalculator

    calculators = {name: KdframeCalculator(model, device=device) for name, model in models.items()}
    rdf_dt = args.rdf_timestep if args.rdf_timestep is not None else min(args.timesteps)
    if rdf_dt not in args.timesteps:
        raise ConfigError("--rdf-timestep", f"{rdf_dt} fs is not one of --timesteps", map(str, args.timesteps))
    molecules = gas_molecules() if args.gas_steps else []
    box_rows, gas_rows, failed = [], [], {}
    frames: dict[str, list[list[np.ndarray]]] = {}  # model -> frames of each surviving run at rdf_dt
    for name, calculator in calculators.items():
        failed[name] = ([], [])
        for dt in args.timesteps:
            steps = round(args.duration_fs / dt) if args.duration_fs else args.steps
            runs = [nve(box, calculator, dt, steps, seed, args.rdf_every if dt == rdf_dt else 0)
                    for seed in range(args.replicas)]
            if dt == rdf_dt:
                frames[name] = [r.frames for r in runs if r.failed_fs is None]
            collapses = [r.bond_collapse for r in runs if r.failed_fs is not None]
            box_rows.append(stability_row(name, dt, runs, f"{sum(collapses)}/{len(collapses)}" if collapses else "—"))
            failed[name][0].append(np.mean([r.failed_fs is not None for r in runs]))
            print(box_rows[-1], flush=True)
            if not molecules:
                continue
            gas = {(mol, seed): nve(atoms, calculator, dt, args.gas_steps, seed)
                   for mol, atoms in molecules for seed in range(args.replicas)}
            lost = sorted({mol for (mol, _), r in gas.items() if r.failed_fs is not None})
            gas_rows.append(stability_row(name, dt, list(gas.values()), ", ".join(lost) or "—"))
            failed[name][1].append(np.mean([r.failed_fs is not None for r in gas.values()]))
            print(gas_rows[-1], flush=True)

    histograms, n_frames, keys, rows = structure_rows(box, frames, reference, args.rdf_max, args.rdf_bins)
    speed = atom_steps_per_second(calculators, box, args.speed_steps, args.speed_repeats)
    speed_rows = [f"| {name} | {rate:,.0f} | {rate / speed[reference]:.2f} |" for name, rate in speed.items()]

    stem = Path(args.out).with_suffix("")
    plots = [failure_plot(args.timesteps, failed, reference, stem.parent / f"{stem.name}.png"),
             rdf_plot(box, histograms, n_frames, reference, args.rdf_max, rdf_dt, stem.parent / f"{stem.name}_rdf.png")]
    gas_text = (f"{len(molecules)} molecules of `{GAS_DATA}` ({', '.join(m for m, _ in molecules)}), the first "
                f"conformer of each (optimised, origin opt:c0), in vacuum; {args.gas_steps} steps per run, "
                f"{args.replicas} velocity seeds per molecule") if molecules else "not run (--gas-steps 0)"
    table_head = "| model | time step (fs) | fraction failed | time to failure (fs) | {} | energy drift (meV/atom/ps) |\n" \
                 "|---|---|---|---|---|---|"
    return f"""# MD acceptance: NVE stability, energy drift, structure and speed vs {reference}

- command: `{command_line()}`
- {provenance}; torch threads: {torch.get_num_threads()}
- models: {', '.join(f'{name} ({type(m).__name__}{f", {len(m.members)} members" if isinstance(m, Ensemble) else ""})'
                     for name, m in models.items())}; reference: {reference}
- condensed box: {len(box)} atoms, {box_text}; {f"{args.duration_fs:g} fs" if args.duration_fs else f"{args.steps} steps"} per run, {args.replicas} velocity seeds per time step
- gas phase: {gas_text}
- every run: ASE velocity Verlet from {TEMPERATURE_K} K Maxwell-Boltzmann velocities (net momentum removed). A run
  fails when two atoms come closer than {FAIL_DISTANCE} Å (minimum image) or the energy is not finite; time to failure:
  simulated fs until then, median over failed runs. Energy drift: slope of a least-squares line through the total
  energy of every step vs time, per atom, |slope| in meV/atom/ps, median over the runs that did not fail (— when all
  failed).

## Condensed box

Bond collapses: failed runs whose close pair lies inside one molecule (the rest: two molecules, or a non-finite energy).

{table_head.format("bond collapses")}
{chr(10).join(box_rows)}

## Gas phase

{table_head.format("molecules with a failed run")}
{chr(10).join(gas_rows) if gas_rows else "| not run | | | | | |"}

Plot (fraction failed vs time step, box and gas phase): `{plots[0].name}`

## Structure: pair distributions vs {reference}

Condensed-box runs at {rdf_dt} fs that did not fail: positions every {args.rdf_every} steps of the second half of each run
(frames: their number, all runs together). Pair distances by ASE's neighbour list (every periodic image within
{args.rdf_max} Å, each unordered pair once), histograms of {args.rdf_bins} bins from 0 to {args.rdf_max} Å: all pairs,
intermolecular pairs (atoms of different molecules) and per element pair. Jensen-Shannon distance (scipy, base 2:
0 identical, 1 disjoint) between a model's histogram and the reference's, each normalised to sum 1 (equivalently
g(r) r² normalised; the box, atoms and volume are the same for every model). — : no surviving run, or no such pair.
The first row is the reference against itself, one half of its frames vs the other (alternate runs; alternate frames
when it has one run): the sampling noise, which distances of the other models should be compared with.

| model | frames | {' | '.join(keys)} |
|---|---|{'---|' * len(keys)}
{chr(10).join(rows)}

Plot (all-pair and intermolecular g(r)): `{plots[1].name}`

## Speed

Atom-steps per second of ASE velocity Verlet on the condensed box ({len(box)} atoms, 0.5 fs): segments of
{args.speed_steps} steps, models interleaved, one warm-up round, median of {args.speed_repeats}; same process, same
torch threads ({torch.get_num_threads()}). Ratio: this model's rate over {reference}'s (above 1: faster).

| model | atom-steps / s | ratio to {reference} |
|---|---|---|
{chr(10).join(speed_rows)}
"""


def failure_plot(timesteps: Sequence[float], failed: dict[str, tuple[list[float], list[float]]], reference: str,
                 path: Path) -> Path:
    """Fraction of runs failed vs time step, one line per model (the reference black, under the others); box and
    gas phase side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
    for ax, index, title in ((axes[0], 0, "condensed box"), (axes[1], 1, "gas phase")):
        for name, curves in failed.items():
            if curves[index]:
                style = {"color": "black", "lw": 3, "ms": 9, "zorder": 1} if name == reference else {"zorder": 2}
                ax.plot(timesteps, curves[index], marker="o", label=name, **style)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("time step (fs)")
    axes[0].set_ylabel("fraction of NVE runs failed")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def rdf_plot(box, histograms: dict[str, dict[str, np.ndarray]], n_frames: dict[str, int], reference: str,
             r_max: float, dt: float, path: Path) -> Path:
    """All-pair and intermolecular g(r) of every model with frames; the reference drawn black."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, key in zip(axes, ("all", "intermolecular")):
        for name, hist in histograms.items():
            if n_frames[name]:
                r, g = rdf(hist[key], box, n_frames[name], r_max)
                style = {"color": "black", "lw": 2} if name == reference else {"lw": 1}
                ax.plot(r, g, label=name, **style)
        ax.set_title(f"{key} pairs, NVE at {dt} fs", fontsize=9)
        ax.set_xlabel("r (Å)")
        ax.set_ylabel("g(r)" if key == "all" else "g(r), intermolecular part")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path
