"""HIP-NN pair finding: energy + forces per atom on condensed clusters, hippynn's all-pairs search vs the cell list.

Same freshly initialised model (the cross-run HIP-NN student's size; timing does not depend on the weights), the
same clusters as the cost suite (open boundaries), and the same atoms in a periodic box of about the cluster's
extent. Writes a markdown result.

    python benchmarks/hipnn_pairs.py --sizes 100 1000 4000
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from common import command_line, provenance
from run import SPACING, molecular_box, density

from kdframe.batch import Batch
from kdframe.io import atomic_write_text
from kdframe.plugins import registry

STUDENT = {"l_max": 1, "n_interaction_layers": 2, "n_atom_layers": 3, "width": 48, "n_sensitivities": 16}


def pairs_within(atoms, cutoff: float) -> int:
    from matscipy.neighbours import neighbour_list

    if atoms.pbc.any():
        return len(neighbour_list("i", atoms=atoms, cutoff=cutoff))
    return len(neighbour_list("i", positions=atoms.positions, cutoff=cutoff))


def seconds_per_call(model, atoms, repeats: int) -> float:
    """Median seconds of one energy + forces call."""
    batch = Batch.from_atoms([atoms]).to("cpu", torch.float32)

    def call():
        positions = batch.positions.clone().requires_grad_(True)
        out = model(replace(batch, positions=positions))
        torch.autograd.grad(out.energy.sum(), positions)

    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 4000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "hipnn_pairs.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    import kdframe_hippynn.pairs as pairs
    from hippynn import custom_kernels

    architecture = registry().architectures["hippynn"]
    hyperparameters = architecture.parse(STUDENT)
    torch.manual_seed(0)
    model = architecture.build(hyperparameters, [1, 6, 7, 8], ["energy"])
    rows = []
    for size in args.sizes:
        atoms = molecular_box(size, spacing=SPACING, periodic=False)
        box = atoms.copy()
        box.cell = np.ptp(atoms.positions, axis=0) + SPACING - 1.0  # about the cluster's density, periodic
        box.pbc = True
        cases = [("open, all pairs", atoms, 1 << 62), ("open, cell list", atoms, 0), ("periodic, cell list", box, 0)]
        for name, system, slots in cases:
            pairs.ALL_PAIRS_SLOTS = slots
            seconds = seconds_per_call(model, system, args.repeats)
            n_pairs = pairs_within(system, hyperparameters.dist_hard_max)
            rows.append(f"| {len(system):,} | {name} | {n_pairs / len(system):.1f} | {seconds / len(system) * 1e6:.0f} | "
                        f"{seconds / n_pairs * 1e6:.2f} |")
            print(rows[-1], flush=True)
    atomic_write_text(args.out, f"""# HIP-NN energy + forces: all pairs vs cell list

- command: `{command_line()}`
- {provenance("cpu")}
- model: HIP-NN {STUDENT}, float32, freshly initialised; hippynn "{custom_kernels.CUSTOM_KERNELS_ACTIVE}" kernels; one
  energy + forces call, median of {args.repeats} after a warm-up. Clusters: the cost suite's ({SPACING} Å grid, ≈ {density(atoms):.2f} g/cm³,
  open boundaries); periodic: the same atoms in a box of the cluster's extent. Pairs within the
  {hyperparameters.dist_hard_max} Å hard cutoff.

| atoms | pair finding | pairs / atom | µs / atom | µs / pair |
|---|---|---|---|---|
{chr(10).join(rows)}
""")


if __name__ == "__main__":
    main()
