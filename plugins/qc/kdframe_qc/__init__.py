"""kdframe-qc: quantum-chemistry labelers (xtb, wb97x_dz, mp2_dz, ccsd(t)_dz) registered as a kdframe plugin."""

from __future__ import annotations

from collections.abc import Callable

from kdframe import hookimpl

from .pyscf_labelers import CCSDTLabeler, MP2Labeler, WB97XLabeler
from .xtb import XTBLabeler

__version__ = "0.1.0"
__all__ = ["XTBLabeler", "WB97XLabeler", "MP2Labeler", "CCSDTLabeler"]


@hookimpl
def register_labelers(register: Callable) -> None:
    for labeler in (XTBLabeler(), WB97XLabeler(), MP2Labeler(), CCSDTLabeler()):
        register(labeler)
