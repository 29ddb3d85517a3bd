"""HIP-NN on CPU: hippynn's message-passing kernels compared, in kdframe training epochs and in energy + forces of
periodic boxes.

Training: interleaved kdframe epochs (E + F loss, double backward) of seeded models of three sizes on the bundled
pool, switching hippynn's kernels between epochs. Boxes: one energy + forces call on the cost suite's periodic
boxes. Each kernel implementation has compiled before it is timed (numba: ~10 s per dtype, once per machine).
Writes a markdown result.

    python benchmarks/hipnn_kernels.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from common import command_line, interleaved_epochs, kdframe_epoch, provenance
from hipnn_pairs import seconds_per_call
from run import SPACING, density, molecular_box

from kdframe.config import resolve_path
from kdframe.data.readers import read_dataset
from kdframe.io import atomic_write_text
from kdframe.plugins import registry

MODELS = {
    "quickstart teacher": {"l_max": 0, "n_interaction_layers": 1, "n_atom_layers": 2, "width": 32,
                           "n_sensitivities": 16},
    "cross-run student": {"l_max": 1, "n_interaction_layers": 2, "n_atom_layers": 3, "width": 48,
                          "n_sensitivities": 16},
    "methods.md §1 teacher": {"l_max": 2, "n_interaction_layers": 2, "n_atom_layers": 4, "width": 128,
                              "n_sensitivities": 20, "dist_soft_min": 0.75, "dist_soft_max": 5.5,
                              "dist_hard_max": 6.5},
}


def with_kernels(kernels: str, run):
    """``run`` under hippynn's ``kernels`` (set before every call, so interleaved runners may differ)."""
    import hippynn

    def call():
        hippynn.set_custom_kernels(kernels)
        return run()

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kernels", nargs="+", default=["sparse", "numba"])
    parser.add_argument("--configurations", type=int, default=256, help="first N configurations of the pool")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 900, 3800])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "hipnn_kernels.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    data = read_dataset(resolve_path("bundled:train_pool.h5", Path.cwd()),
                        {"energy": "xtb.energy", "forces": "xtb.forces"})
    data = data.subset(np.arange(args.configurations))
    epoch_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, hyper in MODELS.items():
            runners = {k: with_kernels(k, kdframe_epoch("hippynn", hyper, data, args.batch_size, "cpu",
                                                        f"{tmp}/{label}{k}"))
                       for k in args.kernels}
            times = {k: statistics.median(t) for k, t in interleaved_epochs(runners, args.repeats, "cpu").items()}
            epoch_rows.append(f"| {label} | " + " | ".join(f"{times[k]:.2f}" for k in args.kernels)
                              + f" | {times[args.kernels[0]] / times[args.kernels[-1]]:.2f} |")
            print(epoch_rows[-1], flush=True)

    architecture = registry().architectures["hippynn"]
    hyperparameters = architecture.parse(MODELS["cross-run student"])
    torch.manual_seed(0)
    model = architecture.build(hyperparameters, [1, 6, 7, 8], ["energy"])
    box_rows = []
    for size in args.sizes:
        atoms = molecular_box(size, spacing=SPACING, periodic=True)
        per_atom = {k: with_kernels(k, lambda: seconds_per_call(model, atoms, args.repeats))() / len(atoms) * 1e6
                    for k in args.kernels}
        box_rows.append(f"| {len(atoms):,} | " + " | ".join(f"{per_atom[k]:.0f}" for k in args.kernels)
                        + f" | {per_atom[args.kernels[0]] / per_atom[args.kernels[-1]]:.2f} |")
        print(box_rows[-1], flush=True)

    columns = " | ".join(args.kernels)
    ratio = f"{args.kernels[0]} / {args.kernels[-1]}"
    rule = "|---" * (len(args.kernels) + 2) + "|"
    atomic_write_text(args.out, f"""# HIP-NN on CPU: hippynn's message-passing kernels

- command: `{command_line()}`
- {provenance("cpu")}
- training: kdframe epochs (loss RMSE + MAE of E and F, float32) over the first {args.configurations} bundled pool
  configurations, batch size {args.batch_size}, median of {args.repeats} interleaved epochs after a warm-up.
- boxes: the cost suite's periodic boxes ({SPACING} Å grid, ≈ {density(atoms):.2f} g/cm³), the cross-run student's
  size, one energy + forces call, median of {args.repeats} after a warm-up.
- models: {MODELS}

Training epoch (s):

| model | {columns} | {ratio} |
{rule}
{chr(10).join(epoch_rows)}

Energy + forces of a periodic box (µs / atom):

| atoms | {columns} | {ratio} |
{rule}
{chr(10).join(box_rows)}
""")


if __name__ == "__main__":
    main()
