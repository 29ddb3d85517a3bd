"""MACE training epoch on e3nn vs cuequivariance-torch kernels (fused on CUDA; its torch fallback on CPU).

Same seeded hyperparameters, data, batch size and loss (RMSE + MAE of E and F); only ``cuequivariance``
differs. Epochs are interleaved so machine noise hits both alike. Writes a markdown result.

    python benchmarks/mace_cuequivariance.py --device cuda   # the measurement that matters
    python benchmarks/mace_cuequivariance.py --device cpu --data bundled:extensibility.h5 --repeats 2  # CPU fallback
"""

from __future__ import annotations

import statistics

from common import epoch_arguments, epoch_data, epochs_with_and_without, write_epoch_report

HYPER = {"r_max": 5.0, "channels": 64, "max_L": 1, "correlation": 3, "num_interactions": 2, "dtype": "float32"}


def main() -> None:
    args = epoch_arguments(__doc__.split("\n")[0], "mace_cuequivariance_{device}.md", batch_size=32, repeats=3)
    args.out = args.out.format(device=args.device.split(":")[0])
    data = epoch_data(args)
    times = epochs_with_and_without("cuequivariance", "mace", HYPER, data, args)
    med = {k: statistics.median(v) for k, v in times.items()}
    speedup = med["cuequivariance=False"] / med["cuequivariance=True"]
    text = write_epoch_report(
        args, "mace_cuequivariance.py", "MACE training epoch: e3nn vs cuequivariance-torch",
        f"data: {len(data)} configurations, {int(data.n_atoms.sum())} atoms; model: MACE {HYPER}; "
        "loss RMSE+MAE of E and F", "kernels", times,
        f"**Speed-up of cuequivariance over e3nn: {speedup:.2f}x** (median epoch e3nn / cuequivariance).")
    print(text)


if __name__ == "__main__":
    main()
