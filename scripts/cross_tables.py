"""README tables of the cross-architecture runs: teacher ensemble / student / control, E / dE / F.

Reads each run's ``report.md`` (written by ``kdframe run configs/cross/NAME.yaml``), so rerun those
first (finished stages are reused; only the scoring is redone on the data as it is now):

    for c in configs/cross/*_to_*.yaml; do .venv/bin/kdframe run "$c" --quiet; done
    .venv/bin/python scripts/cross_tables.py
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = {  # run_dir name -> README row label, in README order
    "ani1ccx_to_hipnn": "ANI-1ccx (pretrained) → HIP-NN", "ani1ccx_to_mace": "ANI-1ccx (pretrained) → MACE",
    "hipnn_to_hipnn": "HIP-NN → HIP-NN", "hipnn_to_ani": "HIP-NN → TorchANI", "hipnn_to_mace": "HIP-NN → MACE",
    "ani_to_ani": "TorchANI → TorchANI", "mace_to_hipnn": "MACE → HIP-NN", "mace_to_ani": "MACE → TorchANI",
    "mace_to_mace": "MACE → MACE",
}
MODELS = ("teacher ensemble", "student", "control")
COLUMNS = {"E rmse": 2, "dE rmse": 2, "F rmse": 1}  # column -> decimals


def report_rows(report: Path, split: str) -> dict[str, dict[str, str]]:
    """{model: {column: value}} for one evaluation set of a run report's markdown table."""
    header, rows = None, {}
    for line in report.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:2] == ["set", "model"]:
            header = cells
        elif header and len(cells) == len(header) and cells[0] == split:
            rows[cells[1]] = dict(zip(header, cells))
    return rows


def table(split: str) -> str:
    lines = ["| run | teacher ensemble E / dE / F | student E / dE / F | control E / dE / F |", "|---|---|---|---|"]
    for run, label in RUNS.items():
        rows = report_rows(ROOT / "runs" / "cross" / run / "report.md", split)
        cells = [" / ".join(f"{float(rows[m][c]):.{d}f}" for c, d in COLUMNS.items()) for m in MODELS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    for split in ("test", "extensibility"):
        print(f"{split}:\n{table(split)}\n")
