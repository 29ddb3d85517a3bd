"""The ``model:`` block of a HIP-NN YAML file, validated by pydantic."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class HipnnHyperparameters(BaseModel):
    """HIP-NN size and radial settings (distances in Å).

    Defaults follow the EKD methods paper (n_int 2, l_max 2, 20 sensitivities,
    soft-min 0.75, soft-max 5.5, hard-max 6.5) with a smaller trunk
    (3 atom layers of width 64 instead of 4 of width 128).
    """

    model_config = ConfigDict(extra="forbid")

    l_max: Literal[0, 1, 2] = Field(2, description="0: Hipnn, 1: HipnnVec, 2: HipnnQuad")
    n_interaction_layers: int = Field(2, ge=1, le=8)
    n_atom_layers: int = Field(3, ge=0, le=16)
    width: int = Field(64, ge=1, description="features per atom layer (hippynn n_features)")
    n_sensitivities: int = Field(20, ge=1)
    dist_soft_min: float = Field(0.75, gt=0.0)
    dist_soft_max: float = Field(5.5, gt=0.0)
    dist_hard_max: float = Field(6.5, gt=0.0)

    @model_validator(mode="after")
    def _ordered_distances(self) -> "HipnnHyperparameters":
        if not self.dist_soft_min < self.dist_soft_max <= self.dist_hard_max:
            raise ValueError(
                "distances must satisfy dist_soft_min < dist_soft_max <= dist_hard_max, got "
                f"dist_soft_min={self.dist_soft_min}, dist_soft_max={self.dist_soft_max}, "
                f"dist_hard_max={self.dist_hard_max}"
            )
        return self
