"""A student's energy + forces time against its own teacher ensemble, side by side in one process, one thread.

    python benchmarks/student_speed.py --student runs/scale/ani1ccx_to_hipnn_10k/student/model.pt --pretrained ani1ccx

Two workloads: every conformation of the bundled extensibility set as one batch (molecules), and the
condensed periodic box of the MD suite (``molecular_box(196)`` of benchmarks/run.py). Calls alternate
between the two models (noisy machines); the median of the repeats is reported, and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from run import molecular_box  # noqa: E402

from kdframe.batch import Batch  # noqa: E402
from kdframe.config import resolve_path  # noqa: E402
from kdframe.data.readers import read_dataset  # noqa: E402
from kdframe.plugins import registry  # noqa: E402
from kdframe.potential import Potential, model_dtype  # noqa: E402


def timed(models: dict[str, torch.nn.Module], batch: Batch, repeats: int) -> dict[str, float]:
    """Median seconds of one energy + forces call per model, calls interleaved."""
    calls = {name: (m, batch.to("cpu", model_dtype(m))) for name, m in models.items()}
    for model, b in calls.values():  # warm-up (kernels, caches)
        model(b, forces=True)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, (model, b) in calls.items():
            start = time.perf_counter()
            model(b, forces=True)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", required=True, help="the student's model.pt")
    parser.add_argument("--pretrained", required=True, help="its teacher: a registered pretrained ensemble")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = {"student": Potential.load(args.student).eval(), "teacher": registry().pretrained[args.pretrained]().eval()}
    data = read_dataset(resolve_path("bundled:extensibility.h5", Path.cwd()), {})
    workloads = {f"extensibility set ({len(data)} conformations, one batch)": data.batch(np.arange(len(data)), []),
                 "condensed periodic box (MD suite, molecular_box(196))": Batch.from_atoms([molecular_box(196)])}
    print(f"| workload | atoms | student ms | teacher ms | teacher / student |\n|---|---|---|---|---|")
    for name, batch in workloads.items():
        t = timed(models, batch, args.repeats)
        print(f"| {name} | {batch.n_atoms} | {1e3 * t['student']:.1f} | {1e3 * t['teacher']:.1f} | "
              f"{t['teacher'] / t['student']:.2f} |")


if __name__ == "__main__":
    main()
