"""Mean ± std over seeds of a recipe, and its errors as multiples of its teacher's, from the runs' report.md tables.

    python benchmarks/seed_table.py runs/scale/RECIPE/report.md runs/seeds/RECIPE_seed1/report.md ... \
        [--model student] [--teacher "teacher ensemble"] [--set extensibility --set test]

Per set: each seed's E / dE / F RMSE (the report's units, kcal/mol and kcal/mol/Å) of the teacher and the model,
their mean ± sample standard deviation (ddof 1) and the model's per-seed ratios to the teacher of the same report,
with the mean of those ratios: the way docs/results.md states a headline row over seeds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

COLUMNS = ("E rmse", "dE rmse", "F rmse")


def read_rows(report: Path) -> dict[tuple[str, str], dict[str, float]]:
    """(set, model) -> column -> value, from the first table of a kdframe report.md."""
    lines = [line for line in report.read_text().splitlines() if line.startswith("|")]
    if len(lines) < 3:
        raise SystemExit(f"{report}: no table (a kdframe run's report.md has one)")
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) != len(header):
            break  # the end of the first table
        values = dict(zip(header, cells))
        rows[(values["set"], values["model"])] = {c: float(values[c]) for c in COLUMNS if values.get(c, "") != ""}
    return rows


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def table(reports: list[Path], model: str, teacher: str, sets: list[str]) -> str:
    rows = {report: read_rows(report) for report in reports}
    out = [f"| set | row | {' | '.join(COLUMNS)} |", "|---|---|" + "---|" * len(COLUMNS)]
    for name in sets:
        for who in (teacher, model):
            missing = [str(r) for r in reports if (name, who) not in rows[r]]
            if missing:
                raise SystemExit(f"{', '.join(missing)}: no row ({name!r}, {who!r}) (valid: "
                                 f"{sorted(set(k[1] for k in rows[reports[0]] if k[0] == name))})")
            cells = [spread([rows[r][(name, who)][c] for r in reports]) for c in COLUMNS]
            out.append(f"| {name} | {who}, {len(reports)} seed(s) | {' | '.join(cells)} |")
        ratios = {c: [rows[r][(name, model)][c] / rows[r][(name, teacher)][c] for r in reports] for c in COLUMNS}
        per_seed = [" / ".join(f"{v:.2f}x" for v in ratios[c]) for c in COLUMNS]
        out.append(f"| {name} | {model} / {teacher}, per seed | {' | '.join(per_seed)} |")
        out.append(f"| {name} | mean of the per-seed ratios | "
                   + " | ".join(f"{statistics.fmean(ratios[c]):.2f}x" for c in COLUMNS) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="report.md of each seed's run")
    parser.add_argument("--model", default="student", help="the report row to summarise (default: student)")
    parser.add_argument("--teacher", default="teacher ensemble", help="the row it is compared with")
    parser.add_argument("--set", action="append", dest="sets", help="sets to show (default: extensibility, test)")
    args = parser.parse_args(argv)
    for report in args.reports:
        if not report.is_file():
            raise SystemExit(f"{report}: not found (valid: a run directory's report.md)")
    print(table(args.reports, args.model, args.teacher, args.sets or ["extensibility", "test"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
