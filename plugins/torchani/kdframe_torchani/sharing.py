"""Computing the AEV once for all members of an ANI ensemble.

Each ensemble member stays an ordinary kdframe :class:`~kdframe.potential.Potential`
(its own file, its own AEV module). Inside :func:`share_aev`, members whose AEV
settings are identical reuse the AEV of the last batch they saw instead of
recomputing it; :class:`AniEnsemble` (a core ``Ensemble``) does this on every call.

The shared AEV carries one autograd graph to ``batch.positions``: take gradients
through all members at once (as ``Ensemble`` does, of the mean) or with
``retain_graph`` (as ``kdframe.derivatives.forces`` does for (n_conf, n_heads) energies).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence

import torch

from kdframe.batch import Batch
from kdframe.potential import Ensemble, Potential

_state = threading.local()


@contextlib.contextmanager
def share_aev() -> Iterator[None]:
    """Within this block, ANI models with the same AEV settings compute it once per batch."""
    outer = getattr(_state, "cache", None)
    if outer is None:
        _state.cache = {}
    try:
        yield
    finally:
        if outer is None:
            _state.cache = None


def cached_aev(key: object, batch: Batch, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``compute()``, or the AEV a model with the same ``key`` made for this very batch."""
    cache: dict | None = getattr(_state, "cache", None)
    if cache is None:
        return compute()
    stamp = (batch.positions._version, torch.is_grad_enabled(), batch.positions.requires_grad)
    hit = cache.get(key)
    # Strong references to the tensors keep their ids unique while the entry lives.
    if hit is not None and hit[0] is batch.positions and hit[1] is batch.species and hit[2] is batch.cell \
            and hit[3] == stamp:
        return hit[4]
    aevs = compute()
    cache[key] = (batch.positions, batch.species, batch.cell, stamp, aevs)
    return aevs


class AniEnsemble(Ensemble):
    """The core's ensemble mean, computing the AEV once for all (identically configured) ANI members."""

    def __init__(self, members: Sequence[Potential]):
        super().__init__(members)

    def forward(self, batch: Batch, forces: bool = True, create_graph: bool = False,
                stress: bool = False) -> dict[str, torch.Tensor]:
        with share_aev():
            return super().forward(batch, forces=forces, create_graph=create_graph, stress=stress)
