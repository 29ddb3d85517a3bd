"""Cheap labels at scale: `kdframe data label` with journal merges rationed to a tenth of the run's time vs merging
every ``--merge-every`` items (the behaviour before), side by side on copies of the same file, in one process.

    python benchmarks/labelling_merges.py runs/data/xtb_sampled.h5 --molecules 60 --method xtb \
        --out benchmarks/results/labelling_merges.md

Copies the first ``--molecules`` molecules of FILE (coordinates only) twice, labels one copy with each policy at
``--workers 0`` (in this process, one thread), and checks that the two files' labels are identical.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_and_write, provenance  # noqa: E402

from kdframe import labelling  # noqa: E402


def unlabelled_copy(source: Path, out: Path, molecules: int) -> int:
    """The first ``molecules`` groups of ``source`` without labels; returns the number of configurations."""
    with h5py.File(source, "r") as f, h5py.File(out, "w") as g:
        for name in list(f)[:molecules]:
            group = g.create_group(name)
            for key in ("atomic_numbers", "coordinates"):
                group.create_dataset(key, data=f[name][key][()])
            group.attrs.update(f[name].attrs)
        return sum(g[name]["coordinates"].shape[0] for name in g)


def timed_labelling(path: Path, method: str, merge_share: float) -> tuple[float, int]:
    """Seconds to label ``path`` with merges rationed to ``merge_share`` of the time, and the number of merges."""
    real, share, merges = labelling.merge, labelling.MERGE_SHARE, []

    def counted(*args, **kwargs):
        merges.append(1)
        return real(*args, **kwargs)

    labelling.merge, labelling.MERGE_SHARE = counted, merge_share
    try:
        start = time.perf_counter()
        labelling.label_file(path, method, workers=0, progress=False)
        return time.perf_counter() - start, len(merges)
    finally:
        labelling.merge, labelling.MERGE_SHARE = real, share


def labels(path: Path, method: str) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {f"{g}/{k}": f[g][k][()] for g in f for k in f[g] if k.startswith(method + ".")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path, help="an ANI-layout HDF5 file (its coordinates are labelled)")
    parser.add_argument("--molecules", type=int, default=60)
    parser.add_argument("--method", default="xtb")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = {name: Path(tmp) / f"{name}.h5" for name in ("rationed", "every")}
        n = [unlabelled_copy(args.file, path, args.molecules) for path in files.values()][0]
        # every 25 items whatever a merge costs: the behaviour before (a share so large that no merge waits)
        rationed = timed_labelling(files["rationed"], args.method, labelling.MERGE_SHARE)
        every = timed_labelling(files["every"], args.method, float("inf"))
        a, b = labels(files["rationed"], args.method), labels(files["every"], args.method)
        same = a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)
    command = " ".join(["python benchmarks/labelling_merges.py", str(args.file), "--molecules", str(args.molecules),
                        "--method", args.method] + (["--out", str(args.out)] if args.out else []))
    print_and_write([
        "# Labelling cheap levels: merges every 25 items vs rationed to a tenth of the time",
        "",
        f"- command: `{command}`",
        f"- {provenance('cpu')}",
        f"- {n} configurations of the first {args.molecules} molecules of `{args.file}`, `--workers 0` (this process), "
        "the two policies one after the other in one process; identical labels: " + ("yes" if same else "**no**"),
        "",
        "| merges | seconds | merges made | configurations/s |",
        "|---|---|---|---|",
        f"| every 25 items (before) | {every[0]:.1f} | {every[1]} | {n / every[0]:.0f} |",
        f"| every 25 items, at most a tenth of the time (now) | {rationed[0]:.1f} | {rationed[1]} | {n / rationed[0]:.0f} |",
        "",
        f"Rationed merges label {every[0] / rationed[0]:.1f}x faster.",
    ], args.out)


if __name__ == "__main__":
    main()
