"""benchmarks/seed_table.py: the mean ± std over seeds and the per-seed ratios docs/results.md quotes."""

from __future__ import annotations

from pathlib import Path

import pytest
from repo_scripts import load_script


@pytest.fixture(scope="module")
def seed_table():
    return load_script("benchmarks/seed_table.py")


def _report(path: Path, teacher: tuple[float, float, float], student: tuple[float, float, float]) -> Path:
    rows = "\n".join(f"| extensibility | {name} | {e} | 0.1 | 0.01 | {de} | 0.1 | {f} | 0.1 |"
                     for name, (e, de, f) in (("teacher ensemble", teacher), ("student", student)))
    path.write_text("# Ensemble knowledge distillation\n\n"
                    "| set | model | E rmse | E mae | E/atom rmse | dE rmse | dE mae | F rmse | F mae |\n"
                    "|---|---|---|---|---|---|---|---|---|\n" + rows + "\n\nEnergies in kcal/mol\n\n| other | table |\n")
    return path


def test_means_sample_std_and_per_seed_ratios(tmp_path, seed_table):
    reports = [_report(tmp_path / "a.md", (0.4, 0.5, 2.0), (0.6, 1.0, 2.0)),
               _report(tmp_path / "b.md", (0.5, 0.5, 2.0), (1.0, 0.5, 3.0))]
    text = seed_table.table(reports, "student", "teacher ensemble", ["extensibility"])
    assert "| extensibility | student, 2 seed(s) | 0.80 ± 0.28 | 0.75 ± 0.35 | 2.50 ± 0.71 |" in text
    assert "| 1.50x / 2.00x | 2.00x / 1.00x | 1.00x / 1.50x |" in text
    assert "| extensibility | mean of the per-seed ratios | 1.75x | 1.50x | 1.25x |" in text


def test_a_missing_row_names_the_report_and_the_rows_there(tmp_path, seed_table):
    report = _report(tmp_path / "a.md", (0.4, 0.5, 2.0), (0.6, 1.0, 2.0))
    with pytest.raises(SystemExit, match=r"a.md: no row \('extensibility', 'control'\) \(valid: \['student', "):
        seed_table.table([report], "control", "teacher ensemble", ["extensibility"])
