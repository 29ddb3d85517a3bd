"""Shared check of the native-format exports: a library's own ASE calculator against kdframe's."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from kdframe.calculator import KdframeCalculator
from kdframe.potential import Potential


def assert_same_predictions(theirs, model: Potential, head: str, systems: Sequence, tolerance: float = 1e-8) -> None:
    """``theirs`` (an ASE calculator) gives ``model``'s energy, forces and (3D-periodic systems) stress."""
    for atoms in systems:
        ours = atoms.copy()
        ours.calc = KdframeCalculator(model, head=head)
        atoms.calc = theirs
        assert atoms.get_potential_energy() == pytest.approx(ours.get_potential_energy(), abs=tolerance)
        np.testing.assert_allclose(atoms.get_forces(), ours.get_forces(), rtol=0, atol=tolerance)
        if atoms.pbc.all():
            np.testing.assert_allclose(atoms.get_stress(), ours.get_stress(), rtol=0, atol=tolerance)
