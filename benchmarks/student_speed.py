"""A student's energy + forces time against its own teacher ensemble, side by side in one process, one thread.

    python benchmarks/student_speed.py --student runs/scale/ani1ccx_to_hipnn_10k/student/model.pt --pretrained ani1ccx
    python benchmarks/student_speed.py --student MODEL.pt --pretrained ani1x --reshape aev.angular_cutoff=3.25  # untrained
    python benchmarks/student_speed.py --student "{architecture: mace, channels: 8, max_L: 0}" --pretrained ani1x

An untrained student (``--reshape``, or a YAML model block as ``--student``, built for the workloads' elements) costs
what the trained one does: the cost does not depend on the weights.

Workloads: every conformation of the bundled extensibility set as one batch (molecules), and condensed periodic
boxes (``molecular_box(N)`` of benchmarks/run.py: the MD suite's 196, and a large one). Calls alternate between
the two models (noisy machines); the median of the repeats is reported, and the ratio. Peak memory per atom of
one energy + forces call: in a fresh process per model and workload, VmHWM - VmRSS around the first call after a
warm-up on a small box (what the call adds: activations and autograd graph, not the weights); the median of
``--memory-repeats`` such processes, with the range of the student's ratio over them (the resident set's peak of one
process varies by up to 15 % between identical runs). With ``--device cuda``
the calls are timed between device synchronisations and the memory is the peak of allocated device memory that the
call adds (torch.cuda.max_memory_allocated), measured in the same process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import proc_status_kib  # noqa: E402
from run import molecular_box  # noqa: E402

from kdframe.batch import Batch  # noqa: E402
from kdframe.config import deep_merge, resolve_path  # noqa: E402
from kdframe.data.readers import read_dataset  # noqa: E402
from kdframe.errors import ConfigError  # noqa: E402
from kdframe.plugins import registry  # noqa: E402
from kdframe.potential import Potential, model_dtype  # noqa: E402


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def timed(models: dict[str, torch.nn.Module], batch: Batch, repeats: int, device: str) -> dict[str, float]:
    """Median seconds of one energy + forces call per model, calls interleaved."""
    calls = {name: (m, batch.to(device, model_dtype(m))) for name, m in models.items()}
    for model, b in calls.values():  # warm-up (kernels, caches)
        model(b, forces=True)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, (model, b) in calls.items():
            synchronize(device)
            start = time.perf_counter()
            model(b, forces=True)
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def reshaped(model: Potential, changes: list[str]) -> Potential:
    """A freshly initialised model of ``model``'s architecture with hyperparameters changed by ``KEY=VALUE`` items
    (dotted keys into nested ones, YAML values, merged as a config's ``extends:`` merges): the cost of a shape before
    training it, which does not depend on the weights."""
    hyperparameters = model.hyperparameters
    for change in changes:
        key, sep, value = change.partition("=")
        if not sep:
            raise SystemExit(f"--reshape {change!r}: give KEY=VALUE with KEY a hyperparameter of {model.hyperparameters}")
        override: Any = yaml.safe_load(value)
        for part in reversed(key.split(".")):
            override = {part: override}
        hyperparameters = deep_merge(hyperparameters, override)
    try:
        return Potential(model.architecture, hyperparameters, model.species, model.heads, model.reference_energies)
    except pydantic.ValidationError as error:
        raise SystemExit(f"--reshape {' '.join(changes)}: not a valid {model.architecture.name} model: {error}") from None


def built(block: str, species: list[int]) -> Potential:
    """An untrained student from a YAML model block (``{architecture: NAME, ...}``) for the workloads' elements."""
    spec = yaml.safe_load(block)
    if not isinstance(spec, dict) or "architecture" not in spec:
        raise SystemExit(f"--student {block!r}: give a model file or a YAML model block {{architecture: NAME, ...}}")
    try:
        architecture = registry().lookup("architectures", spec.pop("architecture"), "--student architecture")
        return Potential(architecture, spec, species, ["energy"])
    except ConfigError as error:
        raise SystemExit(str(error)) from None
    except pydantic.ValidationError as error:
        raise SystemExit(f"--student {block!r}: not a valid {architecture.name} model: {error}") from None


def load(kind: str, args: argparse.Namespace, species: list[int]) -> torch.nn.Module:
    """The teacher, or the student (loaded, or built untrained); in a memory process nothing else is loaded, so the
    memory freed by loading another model cannot hide part of this one's peak."""
    if kind == "teacher":
        model = registry().pretrained[args.pretrained]()
    else:
        model = Potential.load(args.student) if Path(args.student).is_file() else built(args.student, species)
        model = reshaped(model, args.reshape) if args.reshape else model
    return model.to(args.device).eval()


def elements(batches: Iterable[Batch]) -> list[int]:
    """The atomic numbers that occur in ``batches``: what an untrained student is built for."""
    return sorted({int(z) for batch in batches for z in batch.species.tolist()})


def workloads(box_atoms: list[int]) -> dict[str, Batch]:
    data = read_dataset(resolve_path("bundled:extensibility.h5", Path.cwd()), {})
    out = {f"extensibility set ({len(data)} conformations, one batch)": data.batch(np.arange(len(data)), [])}
    for n in box_atoms:
        out[f"condensed periodic box (molecular_box({n}))"] = Batch.from_atoms([molecular_box(n)])
    return out


def peak_bytes(model: torch.nn.Module, batch: Batch, device: str) -> int:
    """What one energy + forces call adds to the resident set (on a GPU: to the allocated device memory) at its
    peak, after a warm-up on a small box."""
    model(Batch.from_atoms([molecular_box(20, seed=3, periodic=False)]).to(device, model_dtype(model)), forces=True)
    batch = batch.to(device, model_dtype(model))
    if device.startswith("cuda"):
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        model(batch, forces=True)
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    Path("/proc/self/clear_refs").write_text("5")  # resets the high-water mark VmHWM to the current RSS
    base = proc_status_kib("VmRSS")
    model(batch, forces=True)
    return (proc_status_kib("VmHWM") - base) * 1024


def peak_kib(kind: str, index: int, model: torch.nn.Module, batch: Batch, args: argparse.Namespace) -> float:
    """peak_bytes of one call in KiB: on a GPU in this process (the allocator counts exactly), on the CPU in a fresh
    one (the resident set's high-water mark is per process)."""
    if args.device.startswith("cuda"):
        return peak_bytes(model, batch, args.device) / 1024
    command = [sys.executable, __file__, *sys.argv[1:], "--memory-of", kind, str(index)]
    return int(subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", required=True,
                        help="the student's model.pt, or a YAML model block for an untrained one")
    parser.add_argument("--pretrained", required=True, help="its teacher: a registered pretrained ensemble")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--box-atoms", type=int, nargs="+", default=[196, 3791])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (memory then: allocated device memory)")
    parser.add_argument("--reshape", nargs="+", metavar="KEY=VALUE", default=[],
                        help="time an untrained student of the same architecture with these hyperparameters changed, "
                        "e.g. aev.angular_cutoff=3.25 hidden=[256,192,128]")
    parser.add_argument("--memory-repeats", type=int, default=3, help="fresh processes per memory figure (CPU)")
    parser.add_argument("--memory-of", nargs=2, metavar=("MODEL", "WORKLOAD"), help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    torch.set_num_threads(1)
    loads = workloads(args.box_atoms)
    species = elements(loads.values())
    if args.memory_of:  # one measurement in this fresh process
        kind, index = args.memory_of
        print(peak_bytes(load(kind, args, species), list(loads.values())[int(index)], args.device))
        return
    models = {kind: load(kind, args, species) for kind in ("student", "teacher")}
    print("| workload | atoms | student ms | teacher ms | teacher / student | student KiB/atom | teacher KiB/atom "
          "| student / teacher memory |\n|---|---|---|---|---|---|---|---|")
    for index, (name, batch) in enumerate(loads.items()):
        t = timed(models, batch, args.repeats, args.device)
        repeats = 1 if args.device.startswith("cuda") else args.memory_repeats  # exact on a GPU
        samples = {kind: [peak_kib(kind, index, models[kind], batch, args) / batch.n_atoms for _ in range(repeats)]
                   for kind in models}
        memory = {kind: statistics.median(s) for kind, s in samples.items()}
        spread = "" if repeats == 1 else (f" ({min(samples['student']) / memory['teacher']:.2f}-"
                                          f"{max(samples['student']) / memory['teacher']:.2f})")
        print(f"| {name} | {batch.n_atoms} | {1e3 * t['student']:.1f} | {1e3 * t['teacher']:.1f} | "
              f"{t['teacher'] / t['student']:.2f} | {memory['student']:.1f} | {memory['teacher']:.1f} | "
              f"{memory['student'] / memory['teacher']:.2f}{spread} |", flush=True)


if __name__ == "__main__":
    main()
