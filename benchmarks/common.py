"""Shared pieces of the benchmark scripts: a kdframe training epoch, interleaved timing, provenance."""

from __future__ import annotations

import argparse
import datetime
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdframe.data.dataset import Dataset
from kdframe.data.reference import fit_reference_energies
from kdframe.io import atomic_write_text
from kdframe.plugins import registry
from kdframe.potential import Potential
from kdframe.probes import ProbeSettings
from kdframe.schedule import Constant
from kdframe.training import LossTerm, Trainer, TrainSettings

WEIGHT_L2 = 1e-6  # on weight matrices, in kdframe_epoch and in the native loops it is compared with


def kdframe_epoch(architecture: str, hyper: dict[str, Any], data: Dataset, batch_size: int, device: str, run_dir: str,
                  regularisers: dict[str, float] | None = None, terms: Sequence[LossTerm] | None = None,
                  probes: Mapping[str, ProbeSettings] | None = None) -> Callable[[], float]:
    """A callable running one more kdframe training epoch of a fresh seeded model; its ``.trainer`` attribute is the
    Trainer. Loss: ``terms`` (default E + F, RMSE + MAE); ``probes`` as for the Trainer."""
    torch.manual_seed(0)
    ref = torch.as_tensor(fit_reference_energies(data, "energy"))[:, None]
    model = Potential(registry().architectures[architecture], hyper, data.elements().tolist(), ["energy"], ref)
    settings = TrainSettings(batch_size=batch_size, max_epochs=10**6, weight_l2=WEIGHT_L2, regularisers=regularisers or {})
    terms = terms or [LossTerm("energy", "energy", Constant(1.0)), LossTerm("forces", "forces", Constant(1.0))]
    trainer = Trainer(model, terms, data, data.subset(np.arange(8)), settings, run_dir, device=device,
                      probes=probes, progress=False)
    epoch = iter(range(1, 10**6))

    def run() -> float:
        return trainer._train_epoch(next(epoch))

    run.trainer = trainer
    return run


def interleaved_epochs(runners: dict[str, Callable[[], Any]], repeats: int, device: str) -> dict[str, list[float]]:
    """Wall time of `repeats` epochs of each runner after one warm-up epoch, interleaved so noise hits all alike."""
    for run in runners.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            if device == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return times


def epochs_with_and_without(option: str, architecture: str, hyper: dict[str, Any], data: Dataset,
                            args: argparse.Namespace) -> dict[str, list[float]]:
    """Interleaved kdframe epoch times of one seeded model with a boolean hyperparameter False and True."""
    with tempfile.TemporaryDirectory() as tmp:
        runners = {f"{option}={value}": kdframe_epoch(architecture, {**hyper, option: value}, data, args.batch_size,
                                                      args.device, f"{tmp}/{value}")
                   for value in (False, True)}
        return interleaved_epochs(runners, args.repeats, args.device)


def timing_rows(times: dict[str, list[float]]) -> str:
    """Markdown rows: name | median | every epoch."""
    return "\n".join(f"| {name} | {statistics.median(t):.3f} | {', '.join(f'{x:.3f}' for x in t)} |"
                     for name, t in times.items())


def _code_commit() -> str:
    """HEAD when the benchmark started, marked ``+changes`` if the code (not the data) differs from it."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])

    commit = git("rev-parse", "--short", "HEAD").stdout.strip()
    dirty = git("diff", "--quiet", "HEAD", "--", "kdframe", "plugins", "benchmarks",
                ":(exclude)kdframe/datasets", ":(exclude)benchmarks/results").returncode
    return commit + (" +changes" if dirty else "")


CODE_COMMIT = _code_commit()  # taken at start: a long benchmark may outlive later commits


def command_line() -> str:
    """The command that ran this script, quoted so that it can be pasted into a shell."""
    return shlex.join(["python", *sys.argv])


def provenance(device: str) -> str:
    """'commit: ...; date: ...; device: ...' for a result file."""
    name = torch.cuda.get_device_name() if device == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s))"
    return f"commit: {CODE_COMMIT}; date: {datetime.date.today()}; device: {name}"


def print_and_write(lines: Sequence[str], out: Path | None) -> None:
    """Print a markdown report's lines and write them to ``out`` (atomically) where given."""
    text = "\n".join(lines) + "\n"
    if out:
        atomic_write_text(out, text)
    print(text)


def write_epoch_report(args: argparse.Namespace, script: str, title: str, details: str, column: str,
                       times: dict[str, list[float]], summary: str) -> str:
    """Write (atomically, to ``args.out``) and return a markdown result: command, provenance, timings, summary."""
    options = " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                       for k, v in vars(args).items() if k != "out")
    text = f"""# {title}

- command: `python benchmarks/{script} {options}`
- {provenance(args.device)}
- {details}

| {column} | median epoch (s) | all epochs (s) |
|---|---|---|
{timing_rows(times)}

{summary}
"""
    atomic_write_text(args.out, text)
    return text


def epoch_arguments(description: str, result: str, batch_size: int, repeats: int) -> argparse.Namespace:
    """The options every epoch-timing script takes (data file and keys, batch size, repeats, device, output)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", default="bundled:train_pool.h5")
    parser.add_argument("--energy", default="xtb.energy")
    parser.add_argument("--forces", default="xtb.forces")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / result))
    args = parser.parse_args()
    torch.set_num_threads(1)
    return args


def epoch_data(args: argparse.Namespace) -> Dataset:
    from kdframe.config import resolve_path
    from kdframe.data import read_dataset

    return read_dataset(resolve_path(args.data, Path.cwd()), {"energy": args.energy, "forces": args.forces})


def native_overhead(args: argparse.Namespace, script: str, library: str, architecture: str, hyper: dict[str, Any],
                    native_epoch: Callable[[Dataset, int, str], Callable[[], Any]],
                    regularisers: dict[str, float] | None = None) -> str:
    """Interleaved epochs of the same model in kdframe and in ``library``'s own loop; writes and returns the report."""
    data = epoch_data(args)
    with tempfile.TemporaryDirectory() as tmp:
        runners = {"kdframe": kdframe_epoch(architecture, hyper, data, args.batch_size, args.device, tmp,
                                            regularisers=regularisers),
                   library: native_epoch(data, args.batch_size, args.device)}
        times = interleaved_epochs(runners, args.repeats, args.device)
    ratio = statistics.median(times[library]) / statistics.median(times["kdframe"])
    return write_epoch_report(
        args, script, f"{architecture} training epoch: kdframe vs {library}'s own loop",
        f"data: {len(data)} configurations, {int(data.n_atoms.sum())} atoms; model: {architecture} {hyper}; "
        "loss RMSE+MAE of E and F", "loop", times,
        f"**Ratio t_{library} / t_kdframe = {ratio:.3f}** (goal >= 0.95; above 1 means kdframe is faster).")


def rmse_plus_mae(residual: torch.Tensor) -> torch.Tensor:
    """The loss form every overhead comparison uses on both sides."""
    return residual.pow(2).mean().sqrt() + residual.abs().mean()


def native_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, matrices: Sequence[torch.Tensor]) -> None:
    """One optimiser step of a native loop on ``loss`` plus kdframe_epoch's L2 on the weight ``matrices``."""
    loss = loss + WEIGHT_L2 * sum(p.pow(2).sum() for p in matrices)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def proc_status_kib(field: str) -> int:
    """A memory field of /proc/self/status (VmRSS, VmHWM, ...) in KiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")
