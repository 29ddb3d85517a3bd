"""Markdown tables and parity plots for a run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import distributed  # noqa: E402
from .evaluation import FREQ, FREQUENCY_NOTE, Metrics  # noqa: E402
from .io import atomic_write, atomic_write_text, make_dir  # noqa: E402
from .units import shown_unit  # noqa: E402

TABLE_COLUMNS = ("E rmse", "E mae", "E/atom rmse", "dE rmse", "dE mae", "F rmse", "F mae")
# Shown only when some row has them (Hessian labels: element and harmonic-frequency errors; stress labels).
OPTIONAL_COLUMNS = ("H rmse", "H mae", "freq rmse", "S rmse", "S mae")


def _cell(metrics: Metrics, column: str) -> str:
    key = f"{column} ({shown_unit(column.split()[0])[0]})"
    return f"{metrics.values[key]:.3f}" if key in metrics.values else "—"


def table(results: Mapping[str, Mapping[str, Metrics]]) -> str:
    """One markdown table: a row per (evaluation set, model); energies kcal/mol, forces kcal/mol/Å, Hessians kcal/mol/Å²,
    harmonic frequencies cm-1, stress GPa."""
    present = {k.split(" (")[0] for per_model in results.values() for m in per_model.values() for k in m.values}
    columns = TABLE_COLUMNS + tuple(c for c in OPTIONAL_COLUMNS if c in present)
    head = "| set | model | " + " | ".join(columns) + " |"
    rule = "|" + "---|" * (len(columns) + 2)
    rows = [f"| {s} | {m} | " + " | ".join(_cell(metrics, c) for c in columns) + " |"
            for s, per_model in results.items() for m, metrics in per_model.items()]
    return "\n".join([head, rule, *rows])


def parity_plot(path: Path, per_model: Mapping[str, Metrics], quantity: str, title: str) -> bool:
    """Predicted vs reference for one quantity, one panel per model; False if nothing to plot."""
    models = [(name, m.pairs[quantity]) for name, m in per_model.items() if quantity in m.pairs and m.pairs[quantity][0].size]
    if not models:
        return False
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.2), squeeze=False)
    unit, factor = shown_unit(quantity)
    for ax, (name, (ref, pred)) in zip(axes[0], models):
        ref, pred = ref.ravel() * factor, pred.ravel() * factor
        lo, hi = min(ref.min(), pred.min()), max(ref.max(), pred.max())
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        ax.scatter(ref, pred, s=3, alpha=0.5)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel(f"reference {quantity} ({unit})", fontsize=7)
    axes[0][0].set_ylabel("predicted", fontsize=7)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
    return True


def save_figure(fig, path: Path) -> Path:
    """Save ``fig`` as a PNG at ``path`` atomically (its folder made) and close it."""
    make_dir(path.parent)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return path


def write_report(run_dir: Path, title: str, results: Mapping[str, Mapping[str, Metrics]], notes: str = "") -> Path:
    """``report.md`` with the table and parity plots (E, dE, F) per evaluation set (under torchrun: rank 0 only)."""
    if not distributed.is_main():
        return run_dir / "report.md"
    lines = [f"# {title}", "", table(results), "",
             "Energies in kcal/mol, forces in kcal/mol/Å, stress (S) in GPa; dE = within-molecule conformer energy differences "
             "(conformers > 100 kcal/mol above their molecule's minimum left out).", ""]
    if any(f"{FREQ} rmse (cm-1)" in m.values for per_model in results.values() for m in per_model.values()):
        lines += [f"Hessians (H) in kcal/mol/Å²; freq = harmonic vibrational frequencies, cm-1, sorted and compared "
                  f"mode by mode per configuration with a reference Hessian. {FREQUENCY_NOTE}", ""]
    if notes:
        lines += [notes, ""]
    for set_name, per_model in results.items():
        for quantity in ("E", "dE", "F", "H", FREQ, "S"):
            png = run_dir / "plots" / f"parity_{set_name}_{quantity.replace('/', '')}.png"
            if parity_plot(png, per_model, quantity, f"{set_name}: {quantity}"):
                lines.append(f"![{set_name} {quantity}](plots/{png.name})")
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path
