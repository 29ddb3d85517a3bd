"""Speed against accuracy of students of one teacher: the Pareto front of issue 22.

    python benchmarks/student_pareto.py --pretrained ani1x \
        --runs "TorchANI [128, 96, 64]=runs/scale/RECIPE" "HIP-NN width 16=runs/scale/OTHER" \
        --shapes "MACE 8 channels, L 0={architecture: mace, channels: 8, max_L: 0, num_interactions: 1}" \
        --out benchmarks/results/student_pareto.md

Accuracy: each run's extensibility E, dE and F RMSE of its student and of its teacher ensemble, read from the run's
``report.md`` (the run scored both on the same data). Speed: the teacher ensemble's energy + forces time over the
student's, 1 thread, calls interleaved in this process (``student_speed.timed``), on the extensibility set as one
batch and on the 3,791-atom box. A ``--shapes`` entry is an untrained model block, timed only: its cost does not
depend on its weights, so it places an architecture on the speed axis before any training.
Writes a markdown table and ``<out>.png``: error / teacher against speed-up, one panel per column.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from matplotlib.ticker import NullFormatter, ScalarFormatter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, print_and_write, provenance  # noqa: E402
from seed_table import read_rows  # noqa: E402
from student_speed import built, elements, timed, workloads  # noqa: E402

from kdframe.plugins import registry  # noqa: E402
from kdframe.potential import Potential  # noqa: E402
from kdframe.report import plt, save_figure  # noqa: E402

COLUMNS = ("E", "dE", "F")  # the report's "E rmse", "dE rmse" and "F rmse"
BOX_ATOMS = 3791


def extensibility_rmse(report: Path) -> dict[str, dict[str, float]]:
    """{'student': {'E': ..}, 'teacher ensemble': {..}} from a run's report table (kcal/mol, kcal/mol/Å)."""
    if not report.is_file():
        raise SystemExit(f"{report}: no report (has the run finished?)")
    rows = {model: {c: values[f"{c} rmse"] for c in COLUMNS}
            for (set_name, model), values in read_rows(report).items()
            if set_name == "extensibility" and all(f"{c} rmse" in values for c in COLUMNS)}
    if not {"student", "teacher ensemble"} <= set(rows):
        raise SystemExit(f"{report}: no extensibility rows for the student and the teacher ensemble")
    return rows


def named(entries: list[str], flag: str) -> dict[str, str]:
    pairs = [entry.partition("=") for entry in entries]
    if any(not sep or not name for name, sep, _ in pairs):
        raise SystemExit(f"{flag}: give NAME=VALUE entries")
    return {name: value for name, _, value in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", required=True, help="the teacher: a registered pretrained ensemble")
    parser.add_argument("--runs", nargs="+", default=[], metavar="NAME=RUN_DIR", help="finished runs of that teacher")
    parser.add_argument("--shapes", nargs="*", default=[], metavar="NAME=BLOCK",
                        help="untrained model blocks (speed only)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write (and its .png)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = {name: Path(run) for name, run in named(args.runs, "--runs").items()}
    scores = {name: extensibility_rmse(run / "report.md") for name, run in runs.items()}  # before any timing
    loads = list(workloads([BOX_ATOMS]).values())
    species = elements(loads)
    students = {name: Potential.load(run / "student" / "model.pt").eval() for name, run in runs.items()}
    students |= {name: built(block, species).eval() for name, block in named(args.shapes, "--shapes").items()}
    teacher = registry().pretrained[args.pretrained]().eval()
    lines = ["# Students against their teacher: speed and accuracy", "",
             f"- command: `{command_line()}`",
             f"- {provenance('cpu')}; teacher: {args.pretrained}",
             "- error: extensibility RMSE of the student / of the teacher ensemble in the same run's report.md; speed: "
             "the teacher's E+F time / the student's, median of interleaved calls", "",
             "| student | weights | E / teacher | dE / teacher | F / teacher | speed-up, molecules | speed-up, "
             f"{BOX_ATOMS}-atom box |", "|---|---|---|---|---|---|---|"]
    points = {}
    for name, student in students.items():
        times = [timed({"student": student, "teacher": teacher}, batch, args.repeats, "cpu") for batch in loads]
        speed = [t["teacher"] / t["student"] for t in times]
        ratios = {c: scores[name]["student"][c] / scores[name]["teacher ensemble"][c] for c in COLUMNS} \
            if name in scores else None
        points[name] = (speed, ratios)
        cells = [f"{ratios[c]:.2f}" for c in COLUMNS] if ratios else ["(untrained)"] * 3
        lines.append(f"| {name} | {student.n_weights():,} | {' | '.join(cells)} | {speed[0]:.2f} | {speed[1]:.2f} |")
        print(lines[-1], flush=True)
    print_and_write(lines, args.out)
    if args.out:
        figure(points, args.out.with_suffix(".png"))


def figure(points: dict[str, tuple[list[float], dict[str, float] | None]], path: Path) -> None:
    """Error / teacher against speed-up on the molecules, one panel per column; untrained shapes as vertical lines."""
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(4 * len(COLUMNS), 3.6), sharex=True)
    for ax, column in zip(axes, COLUMNS):
        for i, (name, (speed, ratios)) in enumerate(points.items()):
            colour = f"C{i}"
            if ratios is None:
                ax.axvline(speed[0], color=colour, linestyle=":", label=f"{name} (untrained)")
            else:
                ax.plot(speed[0], ratios[column], "o", color=colour, label=name)
        ax.axhline(1.5, color="grey", linewidth=0.8)
        ax.axvline(2.0, color="grey", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xticks([0.5, 1, 2, 3, 5, 10, 20])
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("speed-up over the teacher, molecules (1 thread)")
        ax.set_ylabel(f"{column} RMSE / teacher's")
    axes[0].legend(fontsize=7)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
