"""Gas-phase NVE stability of curvature-distilled students and their controls, next to their teacher.

    python benchmarks/curvature_md.py --configs configs/hessian/ani1ccx_curvature_large_w10*.yaml \
        --timesteps 1 2 --duration-fs 1000 --out benchmarks/results/curvature_md.md

The MD acceptance suite (``benchmarks/run.py md``) runs small molecules, outside what the hessian runs' students
learned (molecules of 12-25 atoms). This runs each finished hessian run's own test molecules instead: from the first
optimised conformer (origin ``opt:``) of every test molecule, ASE velocity Verlet from 300 K velocities
(md_acceptance.nve: a run fails when two atoms come closer than 0.5 Å or the energy is not finite), for the teacher,
the student and the control, each in the dtype it was saved in. A run that survives but ends with another bond graph
than it started with (ASE's natural cutoffs x 1.25) counts as broken: a molecule that flies apart never brings two
atoms within 0.5 Å. Energy drift as in the suite (meV/atom/ps, median over the intact runs).
Configs named alike but for a ``_seedN`` suffix are one recipe; each recipe gets its runs' totals.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.neighborlist import natural_cutoffs, neighbor_list

sys.path.insert(0, str(Path(__file__).parent))
from common import command_line, print_and_write, provenance  # noqa: E402
from frequencies_at_minima import SEED_SUFFIX, STAGES, checked_run, minima  # noqa: E402
from md_acceptance import TEMPERATURE_K, fmt, nve  # noqa: E402

from kdframe.calculator import KdframeCalculator  # noqa: E402
from kdframe.potential import Potential  # noqa: E402
from kdframe.workflows.base import Run  # noqa: E402

BOND_SLACK = 1.25  # x the sum of covalent radii: a bond at 300 K stays inside, a 1,3 pair outside


def bonds(atoms: Atoms) -> set[tuple[int, int]]:
    """Pairs (i < j) closer than their covalent radii's sum times BOND_SLACK."""
    i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=BOND_SLACK))
    return {(a, b) for a, b in zip(i.tolist(), j.tolist()) if a < b}


def first_minima(run: Run) -> list[tuple[str, Atoms]]:
    """(molecule, its first optimised conformer) of every test molecule of the run."""
    seen: dict[str, Atoms] = {}
    for name, numbers, positions in minima(run):
        seen.setdefault(name, Atoms(numbers=numbers, positions=positions))
    return list(seen.items())


def md_runs(calculator, molecules: list[tuple[str, Atoms]], dt: float, steps: int, replicas: int) -> dict:
    """NVE on ``calculator`` (ASE) of every molecule and velocity seed: counts of failed and broken runs, failure
    times, drifts of the intact ones, names of the molecules lost."""
    failed, broken, times, drifts, lost = 0, 0, [], [], set()
    for name, atoms in molecules:
        start = bonds(atoms)
        for seed in range(replicas):
            run = nve(atoms, calculator, dt, steps, seed, keep_every=steps)  # keeps the last frame only
            if run.failed_fs is not None:
                failed, lost = failed + 1, lost | {name}
                times.append(run.failed_fs)
            elif bonds(Atoms(numbers=atoms.numbers, positions=run.frames[-1])) != start:
                broken, lost = broken + 1, lost | {name}
            else:
                drifts.append(abs(run.drift))
    return {"runs": len(molecules) * replicas, "failed": failed, "broken": broken, "times": times,
            "drifts": drifts, "lost": sorted(lost)}


def models_of(run: Run) -> dict:
    """The run's teacher ensemble, student and control, in eval mode, in the dtype each was saved in."""
    config = run.config
    with run:
        teacher = config.distillation.teacher.ensemble(run, "distillation.teacher", "teacher", config.seed)
    return {"teacher": teacher.eval(), **{s: Potential.load(run.dir / s / "model.pt").eval() for s in STAGES}}


def row(label: str, model: str, dt: float, result: dict) -> str:
    bad = result["failed"] + result["broken"]
    return (f"| {label} | {model} | {dt:g} | {bad}/{result['runs']} | {result['failed']} | "
            f"{fmt(np.median(result['times']) if result['times'] else None, '.0f')} | "
            f"{fmt(np.median(result['drifts']) if result['drifts'] else None, '.3g')} | {', '.join(result['lost']) or '—'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", required=True, type=Path,
                        help="finished hessian-workflow runs with a pretrained teacher, a student and a control")
    parser.add_argument("--timesteps", type=float, nargs="+", default=[1.0, 2.0], metavar="FS")
    parser.add_argument("--duration-fs", type=float, default=1000.0, help="simulated fs per run at every time step")
    parser.add_argument("--replicas", type=int, default=2, help="velocity seeds per molecule and time step")
    parser.add_argument("--out", type=Path, help="markdown file to write (default: stdout only)")
    args = parser.parse_args()
    if min(args.timesteps) <= 0 or args.duration_fs < max(args.timesteps) or args.replicas < 1:
        parser.error("--timesteps must be > 0, --duration-fs at least the largest time step, --replicas >= 1")
    torch.set_num_threads(1)
    runs = {path: checked_run(parser, path) for path in args.configs}  # every run checked before any MD
    command = command_line()
    lines = ["# Gas-phase NVE of curvature students, their controls and their teacher\n",
             f"- command: `{command}`", f"- {provenance('cpu')}; torch threads: 1",
             f"- each run's test molecules, first optimised conformer of each; velocity Verlet from {TEMPERATURE_K} K, "
             f"{args.duration_fs:g} fs per run, {args.replicas} velocity seeds per molecule and time step",
             f"- failed: two atoms closer than 0.5 Å or a non-finite energy; broken: another bond graph at the end "
             f"(natural cutoffs x {BOND_SLACK}); drift: median |slope| of total energy vs time over the intact runs\n",
             "| run | model | time step (fs) | failed or broken / runs | failed | median time to failure (fs) "
             "| energy drift (meV/atom/ps) | molecules lost |", "|---|---|---|---|---|---|---|---|"]
    totals: dict[tuple[str, str, float], list[int]] = {}  # (recipe, model, dt) -> [bad, runs]
    for path, run in runs.items():
        molecules = first_minima(run)
        for model_name, model in models_of(run).items():
            for dt in args.timesteps:
                result = md_runs(KdframeCalculator(model), molecules, dt, round(args.duration_fs / dt), args.replicas)
                lines.append(row(f"`{path.name}` ({len(molecules)} molecules)", model_name, dt, result))
                print(lines[-1], flush=True)
                total = totals.setdefault((SEED_SUFFIX.sub("", path.stem), model_name, dt), [0, 0])
                total[0] += result["failed"] + result["broken"]
                total[1] += result["runs"]
    lines += ["", "Per recipe (its seeds together): failed or broken runs / runs", "",
              "| recipe | model | time step (fs) | failed or broken / runs |", "|---|---|---|---|"]
    lines += [f"| `{recipe}` | {model} | {dt:g} | {bad}/{n} |" for (recipe, model, dt), (bad, n) in totals.items()]
    print_and_write(lines, args.out)


if __name__ == "__main__":
    main()
