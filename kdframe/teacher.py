"""Teachers: trained models (or ensembles) that give knowledge for a batch."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch

from . import derivatives
from .batch import Batch
from .data.dataset import Dataset
from .data.reference import fit_reference_energies
from .potential import Ensemble, Potential, model_dtype


class Teacher:
    """Wraps a :class:`Potential` or :class:`Ensemble`; predictions are detached (knowledge, not a graph)."""

    def __init__(self, model: Potential | Ensemble, name: str):
        self.model = model.eval()
        self.name = name
        for p in self.model.parameters():
            p.requires_grad_(False)

    @property
    def members(self) -> list[Potential]:
        return list(self.model.members) if isinstance(self.model, Ensemble) else [self.model]

    def fingerprint(self) -> str:
        """Content hash of every member's architecture, hyperparameters and weights (whatever their dtype)."""
        h = hashlib.sha256()
        for m in self.members:
            h.update(json.dumps([m.architecture.name, m.hyperparameters, m.species, m.heads], sort_keys=True).encode())
            for key, value in sorted(m.state_dict().items()):
                h.update(key.encode())
                if not torch.is_tensor(value):
                    h.update(repr(value).encode())
                    continue
                value = value.detach().cpu()
                h.update((value.double() if value.is_floating_point() else value).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def predict(self, batch: Batch, forces: bool = True, stress: bool = False) -> dict[str, torch.Tensor]:
        """Energies, atom energies and (if asked) forces and stress, all heads, detached."""
        with torch.enable_grad():
            out = self.model(batch, forces=forces, stress=stress)
        return {k: v.detach() for k, v in out.items()}

    def hessian_vector_product(self, batch: Batch, vectors: torch.Tensor, head: int = 0) -> torch.Tensor:
        """H v for every configuration of the batch (vectors: (n_atoms, 3)), detached."""
        with torch.enable_grad():
            batch.positions.requires_grad_(True)
            out = self.model(batch, forces=True, create_graph=True)
            force = out["forces"] if out["forces"].dim() == 2 else out["forces"][..., head]
            return derivatives.hessian_vector_product(force, batch.positions, vectors, create_graph=False).detach()


def align_reference_energies(teacher: Teacher, dataset: Dataset, label: str, device: str | torch.device = "cpu",
                             batch_size: int = 128) -> np.ndarray:
    """Put a teacher from elsewhere on this data's energy scale; the per-element shifts (eV) it added.

    A pretrained model carries its own level of theory's atomic energies (ANI-1ccx: CCSD(T)*/CBS,
    hundreds of kcal/mol from cc-pVDZ). Per-element offsets fitted by least squares to label minus
    prediction are added to every member's reference energies (head 0): forces and conformer energy
    differences are unchanged, total energies become comparable.
    """
    dtype = model_dtype(teacher.members[0])
    predicted = np.concatenate([teacher.predict(b.to(device, dtype), forces=False)["energy"][:, 0].cpu().numpy()
                                for b in dataset.batches(batch_size, labels=())])
    offsets = fit_reference_energies(dataset.with_labels(residual=dataset.labels[label] - predicted), "residual")
    # Rounded to 1e-6 eV: the fit differs in its last bits with torch's thread count, and the aligned teacher's
    # fingerprint (which keys its cached knowledge and every stage it taught) must not.
    offsets = np.round(offsets, 6)
    with torch.no_grad():
        for member in teacher.members:
            n = min(len(offsets), member.reference_energies.shape[0])
            member.reference_energies[:n, 0] += torch.as_tensor(offsets[:n], device=member.reference_energies.device)
    return offsets
