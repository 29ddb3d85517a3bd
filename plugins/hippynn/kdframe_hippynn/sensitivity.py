"""hippynn's inverse sensitivity with its centres bounded away from 0 Å.

hippynn's :class:`~hippynn.layers.hiplayers.sensitivity.InverseSensitivityModule` learns each Gaussian's centre
``mu`` unconstrained. A centre no pair distance uses can drift towards 0 (measured: 1.9e-17 Å after 72 epochs on
molecules of 12-25 atoms); ``1 / mu`` then overflows float32 in the double backward of a force loss and every
later gradient of ``sigma`` is NaN. Kept at or above half the soft minimum distance, far below any bond, the
sensitivity is unchanged wherever the centres are in range (``clamp`` passes values and gradients through).
"""

from __future__ import annotations

import torch
from hippynn import settings
from hippynn.layers.hiplayers.sensitivity import CosCutoff, InverseSensitivityModule, warn_if_under


class BoundedInverseSensitivity(InverseSensitivityModule):
    def __init__(self, n_dist, min_dist_soft, max_dist_soft, hard_max_dist, cutoff_type=CosCutoff):
        super().__init__(n_dist, min_dist_soft, max_dist_soft, hard_max_dist, cutoff_type)
        self.min_mu = 0.5 * min_dist_soft

    def forward(self, distflat: torch.Tensor, warn_low_distances: bool | None = None) -> torch.Tensor:
        """hippynn's forward, with ``mu`` bounded."""
        mu = self.mu.clamp(min=self.min_mu)
        if settings.WARN_LOW_DISTANCES if warn_low_distances is None else warn_low_distances:
            with torch.no_grad():  # the inside edge of the shortest sensitivity function, as hippynn warns
                low, argmin = mu.min(dim=1)
                warn_if_under(distflat, (low**-1 - self.sigma[:, argmin] ** -1) ** -1)
        nondim = (distflat.unsqueeze(1) ** -1 - mu**-1) ** 2 / (self.sigma**-2)
        return torch.exp(-0.5 * nondim) * self.cutoff(distflat).unsqueeze(1)
