"""Streaming a packed dataset larger than memory: process memory and batch throughput vs file size.

Builds packed files by replicating the bundled training pool (xTB energies + forces) to each size,
then records the resident memory (VmRSS) after opening and at its peak while drawing block-shuffled
training batches (energies + forces), in a fresh process per size, and configurations per second of
drawing batches and of HIP-NN training steps, all sizes interleaved in one process. The in-memory ANI
dataset of the bundled pool is the reference.

    python benchmarks/packed_data.py --sizes 1260 200000 2000000 --batches 3000 --rounds 5 --steps 20
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import kdframe_epoch, proc_status_kib, provenance  # noqa: E402

from kdframe.data import read_dataset  # noqa: E402
from kdframe.data.packed import PackedWriter, pack_ani  # noqa: E402
from kdframe.io import atomic_write_text  # noqa: E402
from kdframe.training.trainer import _SquaredErrors  # noqa: E402

BUNDLED = Path(__file__).resolve().parents[1] / "kdframe" / "datasets" / "train_pool.h5"
KEYS = {"energy": "xtb.energy", "forces": "xtb.forces"}
HIPNN = {"l_max": 0, "n_interaction_layers": 1, "n_atom_layers": 2, "width": 32, "n_sensitivities": 16}


def build(path: Path, n_conf: int) -> Path:
    """A packed file of ``n_conf`` configurations: copies of the whole bundled pool, one after another."""
    data = read_dataset(BUNDLED, KEYS)
    molecules = [np.flatnonzero(data.molecule == m) for m in range(len(data.molecule_names))]
    writer = PackedWriter(path, {"xtb.energy": "conf", "xtb.forces": "atom"}, f"train_pool x{n_conf}")
    written = 0
    while written < n_conf:
        for m, confs in enumerate(molecules):
            part = data.subset(confs[: n_conf - written])
            if not len(part):
                break
            n = int(part.n_atoms[0])
            writer.add(data.molecule_names[m], part.species[:n], part.positions.reshape(-1, n, 3),
                       {"xtb.energy": part.labels["energy"], "xtb.forces": part.labels["forces"].reshape(-1, n, 3)})
            written += len(part)
    return writer.close()


def rss_mib() -> float:
    return proc_status_kib("VmRSS") / 1024


def memory(path: Path, batches: int, batch_size: int) -> dict[str, float]:
    """In a fresh process: VmRSS before and after opening, and its peak while drawing ``batches`` batches."""
    base = rss_mib()
    data = read_dataset(path, KEYS)
    opened = peak = rss_mib()
    seen, epoch = 0, 0
    while seen < batches:
        for confs in data.batch_indices(batch_size, True, torch.Generator().manual_seed(epoch)):
            data.batch(confs, ["energy", "forces"])
            seen += 1
            if seen % 100 == 0:
                peak = max(peak, rss_mib())
            if seen >= batches:
                break
        epoch += 1
    return {"conformations": len(data), "base": base, "opened": opened, "peak": max(peak, rss_mib())}


def throughput(paths: list[Path], batch_size: int, rounds: int, batches: int, steps: int) -> list[dict[str, float]]:
    """Configurations per second, drawing batches alone and in HIP-NN training steps (E + F loss), every
    dataset in turn in each round so that machine noise hits all alike; medians over rounds."""
    import tempfile

    datasets = [read_dataset(path, KEYS) for path in paths]
    tmp = tempfile.TemporaryDirectory()
    trainers = [kdframe_epoch("hippynn", HIPNN, data, batch_size, "cpu", tmp.name).trainer for data in datasets]
    orders = [data.batch_indices(batch_size, True, torch.Generator().manual_seed(0)) for data in datasets]

    def draw(i: int):
        confs = next(orders[i], None)
        if confs is None:  # a new epoch
            orders[i] = datasets[i].batch_indices(batch_size, True, torch.Generator().manual_seed(len(paths)))
            confs = next(orders[i])
        return confs

    for i, trainer in enumerate(trainers):  # warm-up
        trainer.step(draw(i), [1.0, 1.0], {}, _SquaredErrors(trainer.terms))
    rates: list[dict[str, list[float]]] = [{"data": [], "training": []} for _ in paths]
    for _ in range(rounds):
        for i, (data, trainer) in enumerate(zip(datasets, trainers)):
            start = time.perf_counter()
            for _ in range(batches):
                data.batch(draw(i), ["energy", "forces"])
            rates[i]["data"].append(batches * batch_size / (time.perf_counter() - start))
            start = time.perf_counter()
            for _ in range(steps):
                trainer.step(draw(i), [1.0, 1.0], {}, _SquaredErrors(trainer.terms))
            rates[i]["training"].append(steps * batch_size / (time.perf_counter() - start))
    tmp.cleanup()
    return [{"per_second": float(np.median(r["data"])), "training_per_second": float(np.median(r["training"]))}
            for r in rates]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1260, 200_000, 2_000_000])
    parser.add_argument("--batches", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=20, help="HIP-NN training steps per size and round")
    parser.add_argument("--workdir", default="runs/bench_packed")
    parser.add_argument("--out", default="benchmarks/results/packed_data.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(memory(Path(args.child), args.batches, args.batch_size)))
        return
    torch.set_num_threads(1)
    workdir = Path(args.workdir)
    rows, paths = [], []
    for size in ["memory", *args.sizes]:
        if size == "memory":
            path, kind, built = BUNDLED, "ANI file, in memory", 0.0
        else:
            path, kind = workdir / f"pool_{size}.h5", "packed, streamed"
            start = time.perf_counter()
            if not path.is_file():
                build(path, size) if size != 1260 else pack_ani(BUNDLED, path)
            built = time.perf_counter() - start
        child = subprocess.run([sys.executable, __file__, "--child", str(path), "--batches", str(args.batches),
                                "--batch-size", str(args.batch_size)], capture_output=True, text=True, check=True)
        result = json.loads(child.stdout.strip().splitlines()[-1])
        result.update(kind=kind, file_mib=path.stat().st_size / 2**20, built=built)
        rows.append(result)
        paths.append(path)
        print(json.dumps(result), flush=True)
    for row, rates in zip(rows, throughput(paths, args.batch_size, args.rounds, args.batches // args.rounds, args.steps)):
        row.update(rates)
    data_ref, train_ref = rows[0]["per_second"], rows[0]["training_per_second"]
    table = "\n".join(
        f"| {r['conformations']:,} | {r['kind']} | {r['file_mib']:.0f} | {r['opened'] - r['base']:.1f} | "
        f"{r['peak'] - r['opened']:.1f} | {r['per_second']:,.0f} ({r['per_second'] / data_ref:.2f}) | "
        f"{r['training_per_second']:,.0f} ({r['training_per_second'] / train_ref:.2f}) |" for r in rows)
    largest = rows[-1]
    text = f"""# Packed datasets: memory and throughput vs size

- command: `python benchmarks/packed_data.py --sizes {' '.join(map(str, args.sizes))} --batches {args.batches} --batch-size {args.batch_size} --rounds {args.rounds} --steps {args.steps}`
- {provenance("cpu")}
- data: the bundled training pool (xTB energies + forces) replicated to each size (`build` in the script);
  block-shuffled training batches of {args.batch_size} configurations with energies and forces.
  Memory, each size in a fresh process, is VmRSS: "open" is what opening adds (the per-configuration
  arrays kept in memory), "streaming" is the peak growth while drawing {args.batches} batches.
  Throughput, all sizes in one process, interleaved over {args.rounds} rounds (medians): drawing
  {args.batches // args.rounds} batches alone, then {args.steps} training steps of a small HIP-NN
  ({HIPNN}, E + F loss, float32, one thread) on such batches. The packed files were
  just written, so they were (largely) in the OS page cache: warm reads, not cold-disk reads.

| configurations | storage | file (MiB) | open (MiB) | streaming (MiB) | batches only: conf/s (vs memory) | HIP-NN training: conf/s (vs memory) |
|---|---|---|---|---|---|---|
{table}

At {largest['conformations']:,} configurations the process held {largest['peak'] - largest['base']:.0f} MiB more than
before opening the {largest['file_mib']:.0f} MiB file: about {(largest['peak'] - largest['base']) * 2**20 / largest['conformations']:.0f} bytes
per configuration (the per-configuration arrays, and the shuffled order of an epoch), while the per-atom arrays
stay on disk; of those at most `2 * WINDOW` blocks of `BLOCK_CONFS` configurations are held at once
(`kdframe/data/packed.py`). Training throughput is the column to read: drawing batches is
{largest['per_second'] / largest['training_per_second']:.0f}x faster than the HIP-NN steps consume them.
"""
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
