"""``architecture: torchani`` -- the kdframe Architecture adapter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import pydantic

from kdframe.architecture import Architecture, EnergyModel

from .hyperparameters import AniHyperparameters


class AniArchitecture(Architecture):
    """ANI (TorchANI): AEV + element networks; per-fidelity heads are the last layer's outputs."""

    name: ClassVar[str] = "torchani"
    Hyperparameters: ClassVar[type[pydantic.BaseModel]] = AniHyperparameters
    periodic: ClassVar[bool] = True
    regularisers: ClassVar[tuple[str, ...]] = ()

    def build(self, hyperparameters: pydantic.BaseModel, species: Sequence[int], heads: Sequence[str]) -> EnergyModel:
        from .model import AniModel  # torchani is imported only when a model is built

        assert isinstance(hyperparameters, AniHyperparameters)
        return AniModel(hyperparameters, species, heads)
