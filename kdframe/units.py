"""Unit conversions at the edges of the core. Inside kdframe: eV and Å."""

from ase import units as _ase

HARTREE_TO_EV: float = _ase.Hartree
KCAL_MOL_TO_EV: float = _ase.kcal / _ase.mol
EV_TO_KCAL_MOL: float = 1.0 / KCAL_MOL_TO_EV
EV_PER_A3_TO_GPA: float = 1.0 / _ase.GPa
