"""GFN2-xTB energies and forces through tblite."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from ase.units import Bohr

from kdframe.labeler import Labeler, LabelError, set_openmp_threads

_THREADS_SET_IN: int | None = None  # pid of the process whose OpenMP threads were set


class XTBLabeler(Labeler):
    """GFN2-xTB (tblite), energy in Hartree and forces in Hartree/Å."""

    method = "xtb"
    provides = ("energy", "forces")

    def __init__(self, accuracy: float = 1.0, max_iterations: int = 250, threads: int = 1):
        self.threads = threads
        self.accuracy = accuracy
        self.max_iterations = max_iterations

    def compute(self, atomic_numbers: np.ndarray, positions: np.ndarray) -> dict[str, Any]:
        from tblite.interface import Calculator

        global _THREADS_SET_IN
        if _THREADS_SET_IN != os.getpid():  # small molecules gain nothing from threads; a busy machine loses a lot
            set_openmp_threads(self.threads)
            _THREADS_SET_IN = os.getpid()

        numbers = np.asarray(atomic_numbers, dtype=np.int32)
        calc = Calculator("GFN2-xTB", numbers, np.asarray(positions, dtype=np.float64) / Bohr)
        calc.set("verbosity", 0)
        calc.set("accuracy", self.accuracy)
        calc.set("max-iter", self.max_iterations)
        try:
            result = calc.singlepoint()
        except RuntimeError as exc:  # tblite raises on SCC non-convergence
            raise LabelError(f"xTB failed: {exc}") from exc
        return {"energy": float(result.get("energy")), "forces": -np.asarray(result.get("gradient")) / Bohr}

    def settings(self) -> dict[str, Any]:
        return {"method": "GFN2-xTB", "code": "tblite", "accuracy": self.accuracy, "max_iterations": self.max_iterations}

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {**super().versions(), "tblite": version("tblite")}

