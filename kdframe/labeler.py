"""The labeler interface: one level of quantum-chemistry theory, as a plugin.

A labeler computes reference labels for one conformation in ANI units (Hartree,
Hartree/Å; forces = -gradient). Plugins register instances through the
``register_labelers`` hook, keyed by ``method`` (the ANI key prefix, e.g.
``wb97x_dz`` gives ``wb97x_dz.energy`` and ``wb97x_dz.forces``).
"""

from __future__ import annotations

import platform
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.units import Hartree

from . import plugins
from .errors import ConfigError, KdframeError


class LabelError(KdframeError):
    """A conformation that could not be labelled (e.g. SCF not converged, T1 diagnostic too large).

    The labelling runner records it as a failure and leaves the labels NaN.
    """


class Labeler(ABC):
    """One level of theory. Instances must be picklable (they are sent to worker processes)."""

    method: str = ""
    #: Per-conformation quantities ``compute`` returns: "energy" (Hartree), "forces" (Hartree/Å).
    provides: tuple[str, ...] = ("energy",)
    #: Scalar diagnostics ``compute`` may also return (stored as ``<method>.<name>``), e.g. "t1_diagnostic".
    extras: tuple[str, ...] = ()

    @property
    def job(self) -> str:
        """Name of this labelling job's journal (``<file>.labelling/<job>.jsonl``); the method by default."""
        return self.method

    @abstractmethod
    def compute(self, atomic_numbers: np.ndarray, positions: np.ndarray) -> dict[str, Any]:
        """Labels for one neutral closed-shell conformation; positions in Å. Raise ``LabelError`` on failure."""

    def settings(self) -> dict[str, Any]:
        """Everything that defines the level of theory (basis, functional, grids, thresholds)."""
        return {}

    def versions(self) -> dict[str, str]:
        """Versions of the codes used, for provenance."""
        return {"python": platform.python_version(), "numpy": np.__version__}

    def setup_worker(self) -> None:
        """Called once in each worker process before computing (e.g. to limit threads)."""

    def elements(self) -> set[int] | None:
        """Atomic numbers this labeler can label (None: any); molecules with others are refused before any work."""
        return None

    #: How :meth:`hessian` is computed (provenance of ``<method>.hessian``).
    hessian_scheme: str = "central differences of forces"

    def hessian(self, atomic_numbers: np.ndarray, positions: np.ndarray, step: float = 5e-3) -> np.ndarray:
        """(3N, 3N) Hessian in Hartree/Å² by central differences of the forces (override if analytic)."""
        if "forces" not in self.provides:
            raise ConfigError(self.method, "a Hessian needs a labeler that provides forces")
        pos = np.asarray(positions, dtype=np.float64)
        n = pos.size
        hess = np.empty((n, n))
        for k in range(n):
            plus, minus = pos.copy().reshape(-1), pos.copy().reshape(-1)
            plus[k] += step
            minus[k] -= step
            f_plus = self.compute(atomic_numbers, plus.reshape(pos.shape))["forces"].reshape(-1)
            f_minus = self.compute(atomic_numbers, minus.reshape(pos.shape))["forces"].reshape(-1)
            hess[k] = -(f_plus - f_minus) / (2 * step)
        return 0.5 * (hess + hess.T)


class HessianLabeler(Labeler):
    """``<method>.hessian`` (n_conf, 3N, 3N) in Hartree/Å² from another labeler (its :meth:`Labeler.hessian`).

    A job of its own (journal ``<method>+hessian``), so it resumes and merges like any level of theory
    and never touches the energies and forces of ``<method>``.
    """

    provides = ("hessian",)

    def __init__(self, base: Labeler, step: float = 5e-3):
        self.base, self.step, self.method = base, step, base.method

    @property
    def job(self) -> str:
        return f"{self.method}+hessian"

    def compute(self, atomic_numbers: np.ndarray, positions: np.ndarray) -> dict[str, Any]:
        return {"hessian": self.base.hessian(atomic_numbers, positions, self.step)}

    def settings(self) -> dict[str, Any]:
        scheme = self.base.hessian_scheme
        step = {"step_angstrom": self.step} if "differences" in scheme else {}
        return {**self.base.settings(), "hessian": {"scheme": scheme, **step}}

    def versions(self) -> dict[str, str]:
        return self.base.versions()

    def setup_worker(self) -> None:
        self.base.setup_worker()

    def elements(self) -> set[int] | None:
        return self.base.elements()


def labelers() -> dict[str, Labeler]:
    """Every registered labeler by method (a plugin that fails to import is skipped with a warning), and every
    registered pretrained ensemble as one (:class:`~kdframe.model_labeler.PretrainedLabeler`)."""
    from .model_labeler import PretrainedLabeler  # it imports this module

    found = plugins.registry()
    return {**{name: PretrainedLabeler(name) for name in found.pretrained}, **found.labelers}


def get_labeler(method: str) -> Labeler:
    """The registered labeler for ``method``; a ``ConfigError`` listing the valid ones otherwise."""
    table = labelers()
    if method not in table:
        raise ConfigError("--method", f"unknown labelling method {method!r}", table)
    return table[method]


class LabelerCalculator(Calculator):
    """An ASE calculator (eV, eV/Å) around a labeler that provides energy and forces."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, labeler: Labeler, **kwargs):
        super().__init__(**kwargs)
        self.labeler = labeler

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        out = self.labeler.compute(self.atoms.numbers, self.atoms.positions)
        self.results = {"energy": float(out["energy"]) * Hartree, "forces": np.asarray(out["forces"]) * Hartree}


def set_openmp_threads(n: int = 1) -> int:
    """Set the thread count of every OpenMP runtime already loaded in this process (Linux); returns how many.

    ``OMP_NUM_THREADS`` only works before a runtime starts; labelers call this after importing
    their library so one-core-per-process labelling holds even inside a larger program.
    """
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "omp" in line.rsplit("/", 1)[-1] and ".so" in line}
    except OSError:
        return 0
    count = 0
    for path in paths:
        try:
            ctypes.CDLL(path).omp_set_num_threads(ctypes.c_int(n))
            count += 1
        except (OSError, AttributeError):
            continue
    return count
