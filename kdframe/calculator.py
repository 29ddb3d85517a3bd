"""An ASE calculator for any trained kdframe model, whatever its architecture."""

from __future__ import annotations

import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .batch import Batch
from .potential import Ensemble, Potential, model_dtype


class KdframeCalculator(Calculator):
    """Energy (eV), forces (eV/Å), per-atom energies and, for cells periodic in 3D, stress (eV/Å³, ASE's Voigt
    order and sign) from one head of a kdframe model."""

    implemented_properties = ["energy", "free_energy", "forces", "energies", "stress"]

    def __init__(self, model: Potential | Ensemble, head: str | None = None, device: str | torch.device = "cpu", **kwargs):
        super().__init__(**kwargs)
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.head = 0 if head is None else model.head_index(head, "KdframeCalculator(head=...)")
        self.dtype = model_dtype(model)

    @classmethod
    def from_file(cls, path: str, **kwargs) -> "KdframeCalculator":
        return cls(Potential.load(path), **kwargs)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        species = torch.as_tensor(self.atoms.numbers, dtype=torch.long)
        self.model.check_species(species, "KdframeCalculator")
        stress = "stress" in properties
        if stress and not self.atoms.pbc.all():
            raise PropertyNotImplementedError(f"KdframeCalculator: stress needs a cell periodic in all three "
                                              f"directions; these atoms have pbc={self.atoms.pbc.tolist()}")
        batch = Batch.from_atoms([self.atoms]).to(self.device, self.dtype)
        out = self.model(batch, forces=True, stress=stress)
        energy = float(out["energy"][0, self.head].detach())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out["forces"][..., self.head].detach().cpu().double().numpy(),
            "energies": out["atom_energies"][:, self.head].detach().cpu().double().numpy(),
        }
        if stress:
            self.results["stress"] = full_3x3_to_voigt_6_stress(out["stress"][0, ..., self.head].cpu().numpy())
