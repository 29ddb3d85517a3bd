"""pyscf labelers: wB97X/6-31G* (cart, as in ANI-1x), frozen-core MP2 and CCSD(T) with cc-pVDZ."""

from __future__ import annotations

from typing import Any

import numpy as np
from ase.units import Bohr

from kdframe.labeler import Labeler, LabelError


class _PySCFLabeler(Labeler):
    """Shared molecule building, SCF with convergence check, provenance."""

    basis = "cc-pvdz"
    cart = False

    def __init__(self, max_memory_mb: int = 2000, conv_tol: float = 1e-9):
        self.max_memory_mb = max_memory_mb
        self.conv_tol = conv_tol

    def _molecule(self, atomic_numbers: np.ndarray, positions: np.ndarray):
        from pyscf import gto

        atoms = [(int(z), tuple(map(float, xyz))) for z, xyz in zip(atomic_numbers, np.asarray(positions))]
        mol = gto.M(atom=atoms, unit="Angstrom", basis=self.basis, cart=self.cart, charge=0, spin=0,
                    verbose=0, max_memory=self.max_memory_mb)
        return mol

    def _scf(self, mf):
        mf.conv_tol = self.conv_tol
        mf.max_memory = self.max_memory_mb
        mf.kernel()
        if not mf.converged:  # one second-order (Newton) attempt from where DIIS stopped
            dm = mf.make_rdm1()
            mf = mf.newton()
            mf.kernel(dm0=dm)
        if not mf.converged:
            raise LabelError("SCF not converged")
        return mf

    def _hf(self, atomic_numbers: np.ndarray, positions: np.ndarray):
        from pyscf import scf

        mol = self._molecule(atomic_numbers, positions)
        if mol.nelectron % 2:
            raise LabelError("odd number of electrons: only neutral closed-shell molecules are supported")
        return self._scf(scf.RHF(mol))

    def settings(self) -> dict[str, Any]:
        return {"code": "pyscf", "basis": self.basis, "cartesian": self.cart, "scf_conv_tol": self.conv_tol,
                "scf_fallback": "newton", "charge": 0, "spin": 0}

    def versions(self) -> dict[str, str]:
        import pyscf

        return {**super().versions(), "pyscf": pyscf.__version__}

    def setup_worker(self) -> None:
        from pyscf import lib

        lib.num_threads(1)


class WB97XLabeler(_PySCFLabeler):
    """wB97X/6-31G* with Cartesian d functions (ANI-1x's ``wb97x_dz``), pyscf default grids; energy and forces."""

    method = "wb97x_dz"
    provides = ("energy", "forces")
    basis = "6-31g*"
    cart = True
    xc = "wb97x"

    hessian_scheme = "analytic (pyscf mf.Hessian())"

    def _rks(self, atomic_numbers: np.ndarray, positions: np.ndarray):
        from pyscf import dft

        mol = self._molecule(atomic_numbers, positions)
        if mol.nelectron % 2:
            raise LabelError("odd number of electrons: only neutral closed-shell molecules are supported")
        return self._scf(dft.RKS(mol, xc=self.xc))

    def compute(self, atomic_numbers: np.ndarray, positions: np.ndarray) -> dict[str, Any]:
        mf = self._rks(atomic_numbers, positions)
        grad = mf.nuc_grad_method().kernel()
        return {"energy": float(mf.e_tot), "forces": -np.asarray(grad) / Bohr}

    def hessian(self, atomic_numbers: np.ndarray, positions: np.ndarray, step: float = 5e-3) -> np.ndarray:
        """(3N, 3N) analytic Hessian in Hartree/Å² (``step`` unused)."""
        blocks = self._rks(atomic_numbers, positions).Hessian().kernel()  # (N, N, 3, 3) Hartree/Bohr²
        n = len(atomic_numbers)
        return np.asarray(blocks).transpose(0, 2, 1, 3).reshape(3 * n, 3 * n) / Bohr**2

    def settings(self) -> dict[str, Any]:
        from pyscf import dft

        return {**super().settings(), "xc": self.xc, "grids_level": dft.gen_grid.Grids.level}


class MP2Labeler(_PySCFLabeler):
    """Frozen-core RHF-MP2/cc-pVDZ energy; also the correlation energy (``mp2_dz.corr_energy``)."""

    method = "mp2_dz"
    provides = ("energy",)
    extras = ("corr_energy",)

    def compute(self, atomic_numbers: np.ndarray, positions: np.ndarray) -> dict[str, Any]:
        from pyscf import mp
        from pyscf.data.elements import chemcore

        mf = self._hf(atomic_numbers, positions)
        pt = mp.MP2(mf, frozen=chemcore(mf.mol) or None)
        pt.max_memory = self.max_memory_mb
        pt.kernel()
        return {"energy": float(pt.e_tot), "corr_energy": float(pt.e_corr)}

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "reference": "RHF", "correlation": "MP2", "frozen_core": True}


class CCSDTLabeler(_PySCFLabeler):
    """Frozen-core RHF-CCSD(T)/cc-pVDZ energy; fails when not converged or the T1 diagnostic exceeds 0.02."""

    method = "ccsd(t)_dz"
    provides = ("energy",)
    extras = ("corr_energy", "t1_diagnostic")

    def __init__(self, max_memory_mb: int = 2000, conv_tol: float = 1e-9, max_t1: float = 0.02):
        super().__init__(max_memory_mb, conv_tol)
        self.max_t1 = max_t1

    def compute(self, atomic_numbers: np.ndarray, positions: np.ndarray) -> dict[str, Any]:
        from pyscf import cc
        from pyscf.data.elements import chemcore

        mf = self._hf(atomic_numbers, positions)
        ccsd = cc.CCSD(mf, frozen=chemcore(mf.mol) or None)
        ccsd.max_memory = self.max_memory_mb
        ccsd.conv_tol = 1e-8
        ccsd.kernel()
        if not ccsd.converged:
            raise LabelError("CCSD not converged")
        t1_diag = float(ccsd.get_t1_diagnostic())
        if t1_diag > self.max_t1:
            raise LabelError(f"CC T1 diagnostic {t1_diag:.4f} > {self.max_t1}")
        e_t = float(ccsd.ccsd_t())
        return {"energy": float(ccsd.e_tot + e_t), "corr_energy": float(ccsd.e_corr + e_t), "t1_diagnostic": t1_diag}

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "reference": "RHF", "correlation": "CCSD(T)", "frozen_core": True, "cc_conv_tol": 1e-8,
                "max_t1_diagnostic": self.max_t1}
