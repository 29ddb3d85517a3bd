"""Conversions between kdframe's flat :class:`Batch` and torchani's padded element-index layout.

torchani wants ``elem_idxs`` (n_conf, max_atoms) with values 0..n_elements-1 in the
model's element order and -1 for padding, plus padded coordinates. kdframe atoms
are flat and contiguous per configuration, so ``(conf_index, local_index)`` addresses
an atom in both layouts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from kdframe.batch import Batch

PADDING = -1  # torchani's padding element index
UNKNOWN = -2  # an element outside the model's set: never silently treated as padding


def index_table(elements: Sequence[int]) -> torch.Tensor:
    """Lookup table atomic number -> element index (0 -> PADDING, others -> UNKNOWN)."""
    table = torch.full((119,), UNKNOWN, dtype=torch.long)
    table[0] = PADDING
    table[torch.as_tensor(list(elements), dtype=torch.long)] = torch.arange(len(elements))
    return table


def pad(
    elem_idxs: torch.Tensor, positions: torch.Tensor, conf: torch.Tensor, local: torch.Tensor, n_conf: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter flat atoms into (n_conf, max_atoms) element indices (-1 padded) and coordinates."""
    max_atoms = int(local.max()) + 1 if local.numel() else 0
    padded_idxs = elem_idxs.new_full((n_conf, max_atoms), PADDING)
    padded_idxs[conf, local] = elem_idxs
    coords = positions.new_zeros((n_conf, max_atoms, 3)).index_put((conf, local), positions)
    return padded_idxs, coords


def to_torchani(batch: Batch, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(elem_idxs, coords) of a batch; coordinates stay differentiable in ``batch.positions``."""
    elem_idxs = table.to(batch.species.device)[batch.species.clamp(0, 118)]
    return pad(elem_idxs, batch.positions, batch.conf_index, batch.local_index(), batch.n_conf)


def from_torchani(elem_idxs: torch.Tensor, coords: torch.Tensor, elements: Sequence[int]) -> Batch:
    """The inverse of :func:`to_torchani` (padding: any negative index)."""
    numbers = torch.as_tensor(list(elements), dtype=torch.long, device=elem_idxs.device)
    species = torch.where(elem_idxs >= 0, numbers[elem_idxs.clamp(min=0)], torch.zeros_like(elem_idxs))
    return Batch.from_padded(species, coords)
