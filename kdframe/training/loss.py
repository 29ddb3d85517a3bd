"""Loss terms: RMSE + MAE (equal weights) of one predicted quantity against one label, NaN-masked."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..batch import Batch
from ..schedule import Schedule

QUANTITIES = ("energy", "forces", "atom_energies")


@dataclass
class LossTerm:
    quantity: str  # one of QUANTITIES
    label: str  # name of the label in the dataset / batch
    weight: Schedule
    head: int = 0

    def residual(self, prediction: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        """Prediction minus label over entries whose label is present (NaN = missing, never zero)."""
        pred = prediction[self.quantity][..., self.head]
        target = batch.labels[self.label]
        present = ~torch.isnan(target)
        if target.dim() > 1:
            present = present.all(dim=-1)
        return pred[present] - target[present].to(pred.dtype)

    def errors(self, prediction: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(RMSE, MAE); zero without gradient if the batch holds no such label."""
        r = self.residual(prediction, batch)
        if r.numel() == 0:
            zero = prediction[self.quantity].new_zeros(())
            return zero, zero
        return r.pow(2).mean().sqrt(), r.abs().mean()

    @property
    def name(self) -> str:
        return f"{self.quantity}:{self.label}" + (f"@{self.head}" if self.head else "")
