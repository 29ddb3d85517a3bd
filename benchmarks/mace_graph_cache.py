"""MACE training epoch with and without kdframe's per-dataset neighbour-graph cache.

Same seeded model, data, batch size and loss (RMSE + MAE of E and F); only ``cache_graphs`` differs.
Epochs are interleaved so machine noise hits both alike. Writes a markdown result.

    python benchmarks/mace_graph_cache.py --data bundled:train_pool.h5 --energy xtb.energy --forces xtb.forces
"""

from __future__ import annotations

import statistics

from common import epoch_arguments, epoch_data, epochs_with_and_without, write_epoch_report

HYPER = {"r_max": 5.0, "channels": 16, "max_L": 1, "correlation": 2, "num_interactions": 2, "dtype": "float32"}


def main() -> None:
    args = epoch_arguments(__doc__.split("\n")[0], "mace_graph_cache.md", batch_size=32, repeats=3)
    data = epoch_data(args)
    times = epochs_with_and_without("cache_graphs", "mace", HYPER, data, args)
    med = {k: statistics.median(v) for k, v in times.items()}
    saved = 1 - med["cache_graphs=True"] / med["cache_graphs=False"]
    text = write_epoch_report(
        args, "mace_graph_cache.py", "MACE training epoch: neighbour graphs cached per dataset vs rebuilt every batch",
        f"data: {len(data)} configurations, {int(data.n_atoms.sum())} atoms; model: MACE {HYPER}; "
        "loss RMSE+MAE of E and F", "graphs", times,
        f"**Time saved by the cache: {100 * saved:.1f} %** of an epoch (ratio uncached / cached = {1 / (1 - saved):.3f}).")
    print(text)


if __name__ == "__main__":
    main()
