"""Unit conversions at the edges of the core. Inside kdframe: eV and Å."""

from ase import units as _ase

HARTREE_TO_EV: float = _ase.Hartree
KCAL_MOL_TO_EV: float = _ase.kcal / _ase.mol
EV_TO_KCAL_MOL: float = 1.0 / KCAL_MOL_TO_EV
EV_PER_A3_TO_GPA: float = 1.0 / _ase.GPa


def shown_unit(quantity: str) -> tuple[str, float]:
    """(unit, factor from kdframe's eV-based value) in which tables and plots show a metric's quantity (its name
    before the space: E, E/atom, dE, F, H, S, freq): kcal/mol-based, stress in GPa, harmonic frequencies in cm-1
    (computed in cm-1 already)."""
    if quantity == "S":
        return "GPa", EV_PER_A3_TO_GPA
    if quantity == "freq":
        return "cm-1", 1.0
    return "kcal/mol" + {"F": "/Å", "H": "/Å²"}.get(quantity, ""), EV_TO_KCAL_MOL
