"""The contract an architecture plugin fulfils.

A plugin maps a :class:`~kdframe.batch.Batch` to energies and per-atom energies,
one column per output head (fidelity). Everything else -- reference energies,
forces, Hessian-vector products, saving, training -- lives in the core.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pydantic
import torch

from .batch import Batch


@dataclass
class ModelOutput:
    energy: torch.Tensor  # (n_conf, n_heads) eV, without reference energies
    atom_energies: torch.Tensor  # (n_atoms, n_heads) eV, same order as Batch atoms
    regularisers: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. hierarchicality


class EnergyModel(torch.nn.Module):
    """An architecture's network. ``forward(batch) -> ModelOutput``; must be differentiable in positions."""

    def forward(self, batch: Batch) -> ModelOutput:  # pragma: no cover - interface
        raise NotImplementedError


class Architecture(ABC):
    """One MLIP family. Subclasses set ``name`` and ``Hyperparameters`` and implement :meth:`build`."""

    name: ClassVar[str]
    Hyperparameters: ClassVar[type[pydantic.BaseModel]]
    max_heads: ClassVar[int | None] = None  # None = any number of fidelity heads
    # True when the network handles periodic batches (Batch.cell / Batch.pbc, atoms interacting with images);
    # the core refuses periodic data for the others rather than let them silently treat a crystal as a cluster.
    periodic: ClassVar[bool] = False
    # Names of the regularisers ModelOutput.regularisers carries (``training.regularisers`` may weight them),
    # so a misspelt or foreign name is refused when the YAML is read; None: not declared, checked at the first step.
    regularisers: ClassVar[tuple[str, ...] | None] = None

    @abstractmethod
    def build(self, hyperparameters: pydantic.BaseModel, species: Sequence[int], heads: Sequence[str]) -> EnergyModel:
        """A freshly initialised model for these atomic numbers and output heads."""

    def parse(self, hyperparameters: dict[str, Any]) -> pydantic.BaseModel:
        """Validate a YAML ``model`` block (raises pydantic.ValidationError)."""
        return self.Hyperparameters.model_validate(hyperparameters)

    def prepare(self) -> None:
        """Process-wide set-up done once before a model is built or loaded (kernels, import order)."""
