"""The YAML ``model`` block of a TorchANI potential."""

from __future__ import annotations

from typing import Literal

import pydantic
from ase.data import atomic_numbers
from pydantic import Field

Widths = list[pydantic.PositiveInt]


class AevParameters(pydantic.BaseModel):
    """A custom ANI AEV (eq. 3-4 of the ANI paper). Lengths in Å, angles in radians.

    Shifts are ``num_shifts`` points from ``start`` up to (excluding) the cutoff, as
    torchani's ``cover_linearly`` makes them, unless given explicitly (pretrained files).
    The defaults are the ANI-1x AEV.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    radial_cutoff: float = Field(5.2, gt=0)
    radial_eta: float = Field(16.0, gt=0)
    radial_start: float = Field(0.9, ge=0)
    radial_num_shifts: pydantic.PositiveInt = 16
    radial_shifts: list[float] | None = Field(None, min_length=1, description="explicit ShfR")
    angular_cutoff: float = Field(3.5, gt=0)
    angular_eta: float = Field(8.0, gt=0)
    angular_zeta: float = Field(32.0, gt=0)
    angular_start: float = Field(0.9, ge=0)
    angular_num_shifts: pydantic.PositiveInt = 4
    angular_num_sections: pydantic.PositiveInt = 8
    angular_shifts: list[float] | None = Field(None, min_length=1, description="explicit ShfA")
    angular_sections: list[float] | None = Field(None, min_length=1, description="explicit ShfZ")
    cutoff_fn: Literal["cosine", "smooth"] = "cosine"

    @pydantic.model_validator(mode="after")
    def _cutoffs(self) -> "AevParameters":
        if self.angular_cutoff > self.radial_cutoff:
            raise ValueError(f"angular_cutoff {self.angular_cutoff} exceeds radial_cutoff {self.radial_cutoff}")
        return self


class AniHyperparameters(pydantic.BaseModel):
    """ANI: an AEV shared by all elements, then one MLP per element with one output per head."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    aev: Literal["ani1x", "ani2x"] | AevParameters = Field(
        "ani1x", description="torchani preset name, or a custom AEV block"
    )
    hidden: Widths | dict[str, Widths] = Field(
        default_factory=lambda: [160, 128, 96],
        description="hidden widths of every element network, or per element symbol",
    )
    activation: Literal["celu", "gelu", "silu", "softplus"] = "celu"
    celu_alpha: float = Field(0.1, gt=0, description="CELU alpha (ANI uses 0.1)")
    species_order: list[int] | None = Field(
        None, description="atomic numbers in torchani's element-index order (default: ascending)"
    )
    dtype: Literal["float32", "float64"] = "float32"

    @pydantic.field_validator("hidden")
    @classmethod
    def _symbols(cls, hidden: Widths | dict[str, Widths]) -> Widths | dict[str, Widths]:
        if isinstance(hidden, dict):
            unknown = sorted(s for s in hidden if s not in atomic_numbers or s == "X")
            if unknown:
                raise ValueError(f"hidden: keys must be element symbols, got {unknown}")
        return hidden

    @pydantic.field_validator("species_order")
    @classmethod
    def _order(cls, order: list[int] | None) -> list[int] | None:
        if order is not None and (len(set(order)) != len(order) or any(not 0 < z <= 118 for z in order)):
            raise ValueError(f"species_order must list distinct atomic numbers 1..118, got {order}")
        return order
