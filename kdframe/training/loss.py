"""Loss terms: RMSE + MAE (equal weights) of one predicted quantity against one label, NaN-masked.

``stress`` (eV/Å³) is compared on configurations periodic in 3D (others carry NaN labels).

Curvature quantities are taken from the student's forces by double backward, never stored:
``hvp`` is H·v along the batch's probe label ``probe`` (n_atoms, 3), compared with an HVP
label (n_atoms, 3) taken along the same probes or with a Hessian label contracted with them;
``hessian`` is the full per-configuration Hessian (layout of :mod:`kdframe.derivatives`).

``energy`` is compared per configuration, or divided by its atom count (``per_atom``, as MACE's weighted
loss does), so that a few large periodic boxes do not outweigh the energies of many small molecules.

A term with ``confidence`` (a per-configuration spread label and its scale) weights the configurations in the
training loss by ``1 / (1 + (spread / scale)^2)``, normalised over the batch (:meth:`LossTerm.weighted`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import derivatives
from ..batch import Batch
from ..schedule import Schedule

QUANTITIES = ("energy", "forces", "atom_energies", "stress", "hvp", "hessian")
CURVATURE = ("hvp", "hessian")
NEEDS_FORCES = ("forces", *CURVATURE)


def rmse_mae(residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(RMSE, MAE) of a non-empty residual tensor."""
    return residual.pow(2).mean().sqrt(), residual.abs().mean()


@dataclass
class LossTerm:
    quantity: str  # one of QUANTITIES
    label: str  # name of the label in the dataset / batch
    weight: Schedule
    head: int = 0
    probe: str | None = None  # hvp only: the label holding the probe vectors
    per_atom: bool = False  # energy only: residuals divided by each configuration's atom count
    confidence: tuple[str, float] | None = None  # (per-configuration spread label, scale): see weighted()

    def __post_init__(self) -> None:
        if self.quantity not in QUANTITIES:
            raise ValueError(f"unknown loss quantity {self.quantity!r}; known: {', '.join(QUANTITIES)}")
        if self.per_atom and self.quantity != "energy":
            raise ValueError(f"{self.name}: only an energy term is compared per atom")
        if (self.quantity == "hvp") != (self.probe is not None):
            raise ValueError(f"{self.name}: a probe label is needed for (and only for) quantity 'hvp'")
        if self.confidence is not None and self.quantity not in ("energy", "forces", "atom_energies"):
            raise ValueError(f"{self.name}: confidence weights are for energy, force and atom-energy terms")

    def target(self, batch: Batch) -> torch.Tensor:
        """The label; for ``hvp`` with a Hessian label, that Hessian times the probes."""
        target = batch.labels[self.label]
        if self.quantity == "hvp" and target.dim() == 4:
            return derivatives.hessian_times(target, batch.labels[self.probe], batch)
        return target

    def predict(self, prediction: dict[str, torch.Tensor], batch: Batch, create_graph: bool) -> torch.Tensor:
        """The model's value of this quantity; curvature by double backward on ``batch.positions``."""
        if self.quantity not in CURVATURE:
            return prediction[self.quantity][..., self.head]
        force = prediction["forces"][..., self.head]
        if self.quantity == "hvp":
            # Configurations without a probe (another source's in a mixed batch) have no label either; a NaN probe
            # would still reach every weight's gradient through the double backward, so it counts as zero.
            probe = torch.nan_to_num(batch.labels[self.probe].to(force.dtype), nan=0.0)
            return derivatives.hessian_vector_product(force, batch.positions, probe, create_graph, retain_graph=True)
        return derivatives.hessian(force, batch, create_graph, max_atoms=batch.labels[self.label].shape[2])

    def residual(self, prediction: dict[str, torch.Tensor], batch: Batch, create_graph: bool = False) -> torch.Tensor:
        """Prediction minus label over entries whose label is present (NaN = missing, never zero)."""
        target = self.target(batch)
        present = _present(target)
        if not present.any():  # nothing to compare: skip the (possibly double-backward) prediction
            return target[present]
        pred = self.predict(prediction, batch, create_graph)
        residual = pred[present] - target[present].to(pred.dtype)
        if self.per_atom:
            residual = residual / batch.atoms_per_conf()[present].to(residual.dtype)
        return residual

    def errors(self, prediction: dict[str, torch.Tensor], batch: Batch,
               create_graph: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(RMSE, MAE) as a training loss (curvature keeps its graph to the weights); zero if no label."""
        r = self.residual(prediction, batch, create_graph)
        if r.numel() == 0:
            zero = prediction["energy"].new_zeros(())
            return zero, zero
        return rmse_mae(r)

    @property
    def name(self) -> str:
        quantity = "energy/atom" if self.per_atom else self.quantity
        return f"{quantity}:{self.label}" + (f"@{self.head}" if self.head else "")

    def weighted(self, residual: torch.Tensor, batch: Batch) -> torch.Tensor:
        """:meth:`residual`'s result for the training loss. With ``confidence``, each configuration's entries are
        multiplied by ``sqrt(w / mean w)``, ``w = 1 / (1 + (spread / scale)^2)`` (1 where the spread is missing), the
        mean over the batch's entries: its squared residuals count ``w / mean w`` in the RMSE part of the loss (the
        term's weight stays the term's), its absolute residuals the square root of that in the MAE part."""
        if self.confidence is None or not residual.numel():
            return residual
        label, scale = self.confidence
        spread = batch.labels[label].double()
        # float64: a tiny scale must not overflow to w = 0; the floor keeps every entry's gradient finite
        w = torch.where(torch.isnan(spread), 1.0, 1.0 / (1.0 + (spread / scale) ** 2)).clamp_min(1e-12)
        per_entry = w if self.quantity == "energy" else w[batch.conf_index]  # forces, atom energies: per atom
        w = per_entry[_present(batch.labels[self.label])]
        factor = (w / w.mean()).sqrt().to(residual.dtype)
        return residual * factor.reshape(-1, *[1] * (residual.dim() - 1))


def _present(target: torch.Tensor) -> torch.Tensor:
    """Entries (first dimension) whose label is complete: NaN marks a missing label."""
    present = ~torch.isnan(target)
    return present.all(dim=-1) if target.dim() > 1 else present
