"""Teachers: trained models (or ensembles) that give knowledge for a batch."""

from __future__ import annotations

import hashlib
import json

import torch

from . import derivatives
from .batch import Batch
from .potential import Ensemble, Potential


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

    def predict(self, batch: Batch, forces: bool = True) -> dict[str, torch.Tensor]:
        """Energies, atom energies and (if asked) forces, all heads, detached."""
        with torch.enable_grad():
            out = self.model(batch, forces=forces)
        return {k: v.detach() for k, v in out.items()}

    def hessian_vector_product(self, batch: Batch, vectors: torch.Tensor, head: int = 0) -> torch.Tensor:
        """H v for every configuration of the batch (vectors: (n_atoms, 3)), detached."""
        with torch.enable_grad():
            batch.positions.requires_grad_(True)
            out = self.model(batch, forces=True, create_graph=True)
            force = out["forces"] if out["forces"].dim() == 2 else out["forces"][..., head]
            return derivatives.hessian_vector_product(force, batch.positions, vectors, create_graph=False).detach()
