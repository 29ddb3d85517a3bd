"""The :class:`~kdframe.architecture.Architecture` of PairNet: its YAML ``model`` block and ``build``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import pydantic
from pydantic import Field

from kdframe.architecture import Architecture

from .model import PairNetModel


class PairNetHyperparameters(pydantic.BaseModel):
    """The ``model:`` block of a YAML file (distances in Å). ``extra="forbid"``: a typo is an error naming the key."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    width: int = Field(32, ge=1, description="features per atom")
    n_interactions: int = Field(2, ge=1, le=6, description="continuous-filter interaction blocks")
    n_radial: int = Field(16, ge=2, description="Gaussian radial basis functions")
    cutoff: float = Field(5.0, gt=0.5, description="radial cutoff, Å (smooth cosine envelope)")
    readout_width: int = Field(16, ge=1, description="hidden width of the per-atom readout MLP")


class PairNetArchitecture(Architecture):
    """SchNet-style: element embedding -> interaction blocks -> per-atom MLP with one output per head."""

    name: ClassVar[str] = "pairnet"
    Hyperparameters: ClassVar[type[PairNetHyperparameters]] = PairNetHyperparameters

    def build(self, hyperparameters: PairNetHyperparameters, species: Sequence[int],
              heads: Sequence[str]) -> PairNetModel:
        """A freshly initialised network for these atomic numbers, one output column per head."""
        return PairNetModel(hyperparameters, species, len(heads))
