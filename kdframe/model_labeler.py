"""A registered pretrained ensemble as a labeler: teacher labels through the QC labelling pipeline.

``kdframe data label FILE --method ani1ccx [--hessian]`` writes ``ani1ccx.energy`` / ``.forces`` (the
ensemble means) or ``ani1ccx.hessian`` into an ANI-layout file exactly as a QC method would: journaled,
resumable, merged atomically. The Hessian is taken by autograd of the ensemble-mean forces in float64 (3N
double-backward passes), not by finite differences of 6N force calls (methods.md §4). Energies are the
ensemble's own (its level of theory's atomic energies, no alignment); the journal records the ensemble's
fingerprint, so a different model under the same name is refused. ``kdframe data teacher-label`` is the
other route: eV into a packed file, with the members' spread and energy alignment, for training at scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.units import Hartree

from . import derivatives
from .batch import Batch
from .labeler import Labeler
from .plugins import registry
from .teacher import Teacher


class PretrainedLabeler(Labeler):
    """Energies, forces and (autograd) Hessians of the registered pretrained ensemble ``name``, in Hartree / Å."""

    provides = ("energy", "forces")
    hessian_scheme = "autograd of the ensemble-mean forces (float64)"

    def __init__(self, name: str):
        self.method = name
        self._teacher: Teacher | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_teacher": None}  # each worker loads its own copy

    def _loaded(self) -> Teacher:
        """The ensemble in float64, frozen (loaded on first use)."""
        if self._teacher is None:
            self._teacher = Teacher(registry().pretrained[self.method]().double(), self.method)
        return self._teacher

    def _forward(self, atomic_numbers: np.ndarray, positions: np.ndarray, hessian: bool) -> dict[str, Any]:
        model = self._loaded().model
        model.check_species(torch.as_tensor(atomic_numbers, dtype=torch.long), f"--method {self.method}")
        batch = Batch.from_atoms([Atoms(numbers=atomic_numbers, positions=positions)]).to("cpu", torch.float64)
        with torch.enable_grad():
            batch.positions.requires_grad_(True)
            out = model(batch, forces=True, create_graph=hessian)
            force = out["forces"][..., 0]
            if hessian:
                n = len(atomic_numbers)
                full = derivatives.hessian(force, batch, False, max_atoms=n)  # (N, 3, N, 3) eV/Å²
                return {"hessian": full.detach().reshape(3 * n, 3 * n).numpy() / Hartree}
        return {"energy": float(out["energy"][0, 0].detach()) / Hartree, "forces": force.detach().numpy() / Hartree}

    def compute(self, atomic_numbers: np.ndarray, positions: np.ndarray) -> dict[str, Any]:
        return self._forward(atomic_numbers, positions, hessian=False)

    def hessian(self, atomic_numbers: np.ndarray, positions: np.ndarray, step: float = 5e-3) -> np.ndarray:
        """(3N, 3N) Hessian in Hartree/Å² by autograd (``step`` is unused)."""
        out = self._forward(atomic_numbers, positions, hessian=True)["hessian"]
        return 0.5 * (out + out.T)

    def settings(self) -> dict[str, Any]:
        return {"pretrained": self.method, "fingerprint": self._loaded().fingerprint(),
                "dtype": "float64", "energy": "ensemble mean, the model's own atomic energies"}

    def versions(self) -> dict[str, str]:
        return {**super().versions(), "torch": torch.__version__}

    def setup_worker(self) -> None:
        torch.set_num_threads(1)

    def elements(self) -> set[int]:
        return set.intersection(*(set(member.species) for member in self._loaded().members))
