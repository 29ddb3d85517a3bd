"""Does the teacher ensemble trust itself where a student explores? Its own Langevin MD in the exploration systems,
watched as exploration watches a student: members' force spread every ``--every`` steps, and when it first
exceeds the exploration bound (``max_spread``, 1 eV/Å by default). Issue 23 asks whether ANI-1ccx stays under that
bound in the liquid boxes where most exploration runs of its students stopped.

    python benchmarks/teacher_spread.py --pretrained ani1ccx --systems runs/generated/boxes_196.h5 \\
        --names 'box:*' --max-systems 6 --temperatures 300 600

Writes ``benchmarks/results/teacher_spread.md``: per system and temperature the spread's median and maximum over
the kept frames, the fraction of frames above half the bound and above it, and the fs at which it first passed it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import provenance  # noqa: E402
from md_acceptance import load_pretrained  # noqa: E402

from kdframe.exploration import Dynamics, Watcher, run_trajectory  # noqa: E402
from kdframe.io import atomic_write_text  # noqa: E402
from kdframe.workflows.explore import Systems, read_systems  # noqa: E402


def spread_rows(teacher, systems, temperatures: list[float], dynamics: Dynamics, seed: int) -> list[str]:
    """One markdown row per system and temperature of the teacher's own trajectory (no bound stops it)."""
    unbounded = dynamics.model_copy(update={"max_spread": 1e9})  # watch past the bound
    watcher = Watcher(teacher)
    rows = []
    try:
        for i, (name, atoms) in enumerate(systems):
            for j, temperature in enumerate(temperatures):
                run = run_trajectory(teacher, watcher, atoms, name, temperature, seed + i * len(temperatures) + j,
                                     i, unbounded)
                spreads = np.array([f.spread for f in run.frames])
                over = [f.time_fs for f in run.frames if f.spread > dynamics.max_spread]
                ended = run.failure or f"ran {run.simulated_fs:.0f} fs"
                rows.append(f"| {name} | {len(atoms)} | {temperature:.0f} | {np.median(spreads):.3f} | "
                            f"{spreads.max():.3f} | {np.mean(spreads > dynamics.max_spread / 2):.2f} | "
                            f"{np.mean(spreads > dynamics.max_spread):.2f} | "
                            f"{over[0] if over else '-'} | {ended} |")
                print(rows[-1], flush=True)
    finally:
        watcher.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrained", default="ani1ccx", help="registered pretrained ensemble")
    parser.add_argument("--systems", required=True, help="file of starting configurations (as explore.systems)")
    parser.add_argument("--names", default="*")
    parser.add_argument("--max-systems", type=int, default=6)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 600.0])
    parser.add_argument("--timestep-fs", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--max-spread", type=float, default=1.0, help="the exploration bound (eV/Å)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "teacher_spread.md"))
    args = parser.parse_args(argv)
    if not 0 < args.every <= args.steps:
        parser.error(f"--every {args.every} must be between 1 and --steps ({args.steps}): no frame would be kept")
    torch.set_num_threads(1)
    teacher = load_pretrained([args.pretrained], torch.device("cpu"))[args.pretrained]
    systems = read_systems(Systems(path=args.systems, names=args.names, max_systems=args.max_systems), Path.cwd())
    if not systems:
        parser.error(f"no molecule of {args.systems} matches --names {args.names!r}")
    dynamics = Dynamics(ensemble="langevin", temperatures_K=args.temperatures, timestep_fs=args.timestep_fs,
                        steps=args.steps, every=args.every, max_spread=args.max_spread)
    rows = spread_rows(teacher, systems, args.temperatures, dynamics, args.seed)
    command = " ".join(["python benchmarks/teacher_spread.py", *sys.argv[1:]] if argv is None else argv)
    atomic_write_text(args.out, f"""# The teacher's own force spread in the exploration systems

- command: `{command}`
- {provenance("cpu")}
- teacher: {args.pretrained}; Langevin (friction as exploration's default), {args.timestep_fs} fs x {args.steps} steps,
  a frame every {args.every} steps; spread = members' force standard deviation, RMS over atoms (eV/Å), as the
  exploration watcher computes it; bound = {args.max_spread} eV/Å

| system | atoms | T (K) | median spread | max spread | frames > bound/2 | frames > bound | first fs > bound | run |
|---|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
