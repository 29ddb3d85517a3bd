"""An ASE calculator for any trained kdframe model, whatever its architecture."""

from __future__ import annotations

import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from . import derivatives
from .batch import Batch
from .members import forward_with_members, member_gradients
from .potential import Ensemble, Potential, model_dtype

SPREAD = ("energy_std", "forces_std")


class KdframeCalculator(Calculator):
    """Energy (eV), forces (eV/Å), per-atom energies and, for cells periodic in 3D, stress (eV/Å³, ASE's Voigt
    order and sign) from one head of a kdframe model.

    On an :class:`~kdframe.potential.Ensemble` these are the members' mean, and the members' spread (population
    std, ddof 0) comes too: ``energy_std`` (eV) of their energies, in every calculation (free), and ``forces_std``
    (eV/Å, (n_atoms, 3)) of each force component, when asked for or in every calculation with ``forces_std=True``
    (one gradient per member: about 3.4x the time of ANI-1ccx's energy and forces, which share one AEV)."""

    implemented_properties = ["energy", "free_energy", "forces", "energies", "stress"]

    def __init__(self, model: Potential | Ensemble, head: str | None = None, device: str | torch.device = "cpu",
                 forces_std: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.head = 0 if head is None else model.head_index(head, "KdframeCalculator(head=...)")
        self.dtype = model_dtype(model)
        self.ensemble = isinstance(model, Ensemble)
        if forces_std:
            self._refuse_spread_of_one_model(["forces_std"])
        self.forces_std = forces_std
        if self.ensemble:
            self.implemented_properties = [*type(self).implemented_properties, *SPREAD]

    @classmethod
    def from_file(cls, path: str, **kwargs) -> "KdframeCalculator":
        return cls(Potential.load(path), **kwargs)

    def get_property(self, name, atoms=None, allow_calculation=True):
        self._refuse_spread_of_one_model([name])
        return super().get_property(name, atoms, allow_calculation)

    def _refuse_spread_of_one_model(self, properties) -> None:
        asked = [p for p in properties if p in SPREAD]
        if asked and not self.ensemble:
            raise PropertyNotImplementedError(
                f"KdframeCalculator: {', '.join(asked)} is the spread of an ensemble's members; this model is a "
                "single potential, which carries no uncertainty estimate (give a kdframe.potential.Ensemble)")

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        self._refuse_spread_of_one_model(properties)
        super().calculate(atoms, properties, system_changes)
        species = torch.as_tensor(self.atoms.numbers, dtype=torch.long)
        self.model.check_species(species, "KdframeCalculator")
        stress = "stress" in properties
        if stress and not self.atoms.pbc.all():
            raise PropertyNotImplementedError(f"KdframeCalculator: stress needs a cell periodic in all three "
                                              f"directions; these atoms have pbc={self.atoms.pbc.tolist()}")
        batch = Batch.from_atoms([self.atoms]).to(self.device, self.dtype)
        if self.ensemble and (self.forces_std or "forces_std" in properties):
            self._calculate_with_member_forces(batch, stress)
            return
        if self.ensemble:
            out, energies = forward_with_members(self.model, batch, self.head, forces=True, stress=stress)
        else:
            out, energies = self.model(batch, forces=True, stress=stress), None
        energy = float(out["energy"][0, self.head].detach())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out["forces"][..., self.head].detach().cpu().double().numpy(),
            "energies": out["atom_energies"][:, self.head].detach().cpu().double().numpy(),
        }
        if energies is not None:
            self.results["energy_std"] = float(energies[:, 0].detach().cpu().double().numpy().std())
        if stress:
            self.results["stress"] = full_3x3_to_voigt_6_stress(out["stress"][0, ..., self.head].cpu().numpy())

    def _calculate_with_member_forces(self, batch: Batch, stress: bool) -> None:
        """An ensemble's results from each member's energy and forces (one gradient per member): the forces are the
        mean of the members' forces, the same as the gradient of their mean energy up to float rounding."""
        batch.positions.requires_grad_(True)
        inner, strain = derivatives.strained(batch) if stress else (batch, None)
        out, energies = forward_with_members(self.model, inner, self.head)
        gradients = member_gradients(energies, [batch.positions] + ([strain] if stress else []))
        forces = -gradients[0].detach().cpu().double().numpy()  # (n_members, n_atoms, 3)
        energy = float(out["energy"][0, self.head].detach())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": forces.mean(0),
            "energies": out["atom_energies"][:, self.head].detach().cpu().double().numpy(),
            "energy_std": float(energies[:, 0].detach().cpu().double().numpy().std()),
            "forces_std": forces.std(0),
        }
        if stress:
            virial = gradients[1].detach().double().mean(0)  # (n_conf, 3, 3): the mean energy's strain derivative
            self.results["stress"] = full_3x3_to_voigt_6_stress(derivatives.stress(virial, batch)[0].cpu().numpy())
