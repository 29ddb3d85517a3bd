"""Model-size sweeps: error vs number of trainable weights, as a table, a plot and learning curves."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.ticker import NullFormatter

from ..evaluation import Metrics
from ..errors import WriteError
from ..io import warn
from ..potential import Ensemble, Potential
from ..report import plt, save_figure
from ..units import EV_TO_KCAL_MOL

if TYPE_CHECKING:
    from .base import Run

FORCE_COLUMN = "{split}_rmse[forces:forces]"  # what the trainer writes to metrics.csv for the true forces
STYLE = {"teacher": ("k", "*"), "born-again": ("tab:red", "D"), "student": ("tab:blue", "o"),
         "control": ("tab:orange", "s")}


@dataclass
class SweepRow:
    name: str
    kind: str  # teacher, student, control or born-again
    model: Potential | Ensemble
    metrics_csv: Path  # the stage's per-epoch metrics (absent for a model loaded from a file)
    n_weights: int = 0  # trainable weights of all members (a frozen pretrained teacher: all its weights)

    def __post_init__(self) -> None:
        self.n_weights = self.n_weights or weights_of(self.model)


def weights_of(model: Potential | Ensemble) -> int:
    """Trainable weights of all members; a frozen member (a pretrained teacher's) counts all its weights."""
    members = model.members if isinstance(model, Ensemble) else [model]
    return sum(m.n_weights() or m.n_weights(frozen_too=True) for m in members)


def _value(metrics: Metrics | None, key: str) -> float:
    return metrics.values.get(key, math.nan) if metrics is not None else math.nan


def sweep_table(rows: Sequence[SweepRow], results: Mapping[str, Metrics]) -> str:
    """Markdown: one line per model with its trainable weights and test errors (kcal/mol, kcal/mol/Å)."""
    lines = ["| model | kind | trainable weights | E rmse | F rmse | F mae |", "|---|---|---|---|---|---|"]
    for row in rows:
        m = results.get(row.name)
        cells = [f"{_value(m, k):.3f}" for k in ("E rmse (kcal/mol)", "F rmse (kcal/mol/Å)", "F mae (kcal/mol/Å)")]
        lines.append(f"| {row.name} | {row.kind} | {row.n_weights} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def size_plot(path: Path, rows: Sequence[SweepRow], results: Mapping[str, Metrics]) -> Path:
    """Test force RMSE vs trainable weights: students and controls as lines, teacher and Born-Again as markers."""
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for kind, (colour, marker) in STYLE.items():
        points = sorted((r.n_weights, _value(results.get(r.name), "F rmse (kcal/mol/Å)"))
                        for r in rows if r.kind == kind)
        if points:
            ax.plot(*zip(*points), color=colour, marker=marker, ls="-" if len(points) > 1 else "", label=kind)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("trainable weights")
    ax.set_ylabel("test force RMSE (kcal/mol/Å)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def read_curve(path: Path, column: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of one metrics.csv column; empty when the file or column is absent."""
    if not path.is_file():
        return [], []
    with path.open() as f:
        records = [r for r in csv.DictReader(f) if r.get(column) not in (None, "")]
    return [int(r["epoch"]) for r in records], [float(r[column]) for r in records]


def learning_curves(path: Path, rows: Sequence[SweepRow]) -> Path | None:
    """Training and validation force RMSE per epoch of every trained model (students solid, controls dashed)."""
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8), sharey=True)
    drawn = False
    for ax, split in zip(axes, ("train", "valid")):
        for row in rows:
            epochs, values = read_curve(row.metrics_csv, FORCE_COLUMN.format(split=split))
            if epochs:
                colour, _ = STYLE[row.kind]
                ax.plot(epochs, [v * EV_TO_KCAL_MOL for v in values], color=colour, lw=1,
                        ls="--" if row.kind == "control" else "-", label=row.name)
                drawn = True
        ax.set_xlabel("epoch")
        ax.set_title(f"{'training' if split == 'train' else 'validation'} split", fontsize=9)
    if not drawn:
        plt.close(fig)
        return None
    axes[0].set_ylabel("force RMSE (kcal/mol/Å)")
    axes[1].legend(fontsize=6, ncol=2)
    return save_figure(fig, path)


def sweep_report(run: "Run", rows: Sequence[SweepRow], title: str) -> str:
    """Score the rows; the sweep table, error-vs-size plot and learning curves in report.md; the tables."""
    results = run.scores({row.name: row.model for row in rows})
    sweep = sweep_table(rows, results["test"])
    try:
        size = size_plot(run.dir / "plots" / "force_error_vs_weights.png", rows, results["test"])
        curves = learning_curves(run.dir / "plots" / "learning_curves.png", rows)
    except WriteError as exc:  # a finished run in a read-only folder still prints its tables
        warn(f"the sweep plots could not be written ({exc})")
        size = curves = None
    notes = "\n\n".join([f"## Error vs trainable weights (test split)\n\n{sweep}",
                         *(f"![{p.stem}](plots/{p.name})" for p in (size, curves) if p is not None)])
    return f"{sweep}\n\n" + run.evaluate({}, title, notes, results)
