"""benchmarks/gpu_checks.py, the correctness script of a GPU session, run here on the CPU so that it cannot rot."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def gpu_checks():
    sys.path.insert(0, str(BENCHMARKS))  # the script imports its sibling common.py
    try:
        import gpu_checks
    finally:
        sys.path.remove(str(BENCHMARKS))
    return gpu_checks


def test_every_check_passes_on_the_cpu_and_a_report_is_written(gpu_checks, tmp_path):
    out = tmp_path / "checks.md"
    assert gpu_checks.main(["--device", "cpu", "--out", str(out)]) == 0
    text = out.read_text()
    for name in ("hippynn", "torchani", "mace"):
        assert f"| {name}: periodic box, cpu vs CPU (E, F, stress, H·v; float64) |" in text
    assert "mace cuequivariance vs e3nn on cpu: periodic box (float32)" in text
    assert "FAIL" not in text and "passed.**" in text


def test_a_difference_beyond_the_tolerance_fails(gpu_checks, monkeypatch):
    original, calls = gpu_checks.predictions, []

    def shifted(model, batch, device):  # the second of each (reference, device) pair: forces off by 1e-6
        calls.append(1)
        out = original(model, batch, device)
        return {k: v + 1e-6 if len(calls) % 2 == 0 and k == "forces" else v for k, v in out.items()}

    monkeypatch.setattr(gpu_checks, "predictions", shifted)
    rows = gpu_checks.architecture_rows(gpu_checks.torch.device("cpu"))
    failed = [what for what, _, ok in rows if not ok]
    assert len(failed) == 6 and all("vs CPU" in what for what in failed)
