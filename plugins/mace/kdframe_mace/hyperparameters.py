"""The YAML ``model`` block of a MACE potential."""

from __future__ import annotations

from typing import Literal

import pydantic
from pydantic import Field


class MaceHyperparameters(pydantic.BaseModel):
    """MACE settings (names follow ``mace_run_train`` where one exists)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    r_max: float = Field(5.0, gt=0, description="cutoff radius, Å")
    channels: int = Field(32, gt=0, description="num_channels: features per irrep")
    max_L: int = Field(1, ge=0, le=2, description="highest irrep of the hidden features")
    correlation: int = Field(3, ge=1, description="body order minus one of the product basis")
    num_interactions: int = Field(2, ge=1)
    num_radial_basis: int = Field(8, gt=0, description="Bessel functions (num_bessel)")
    num_cutoff_basis: int = Field(5, gt=0, description="polynomial cutoff order p")
    max_ell: int = Field(3, ge=0, description="highest spherical harmonic of the edges")
    radial_MLP: list[int] = Field(default_factory=lambda: [64, 64, 64], min_length=1)
    MLP_irreps: str = Field(
        "16x0e", pattern=r"^\s*[1-9][0-9]*x0e\s*$", description="hidden scalars of the non-linear readout, per head"
    )
    avg_num_neighbors: float = Field(8.0, gt=0, description="message normalisation")
    atomic_inter_scale: float = Field(1.0, gt=0, description="scale of the network energy (all heads)")
    atomic_inter_shift: float = Field(0.0, description="per-atom shift; the core's references usually make it 0")
    dtype: Literal["float32", "float64"] = "float64"
    cuequivariance: bool = Field(
        False, description="cuequivariance-torch kernels (needs the extra); fused on CUDA, torch fallback elsewhere"
    )
    reduced_cg: bool = Field(
        False, description="MACE's reduced Clebsch-Gordan product basis (needs cuequivariance-torch; fewer weights)"
    )
    cache_graphs: bool = Field(True, description="reuse neighbour lists per dataset index")
    graph_skin: float = Field(0.0, ge=0, description="Verlet skin, Å: cached graphs survive moves < skin/2")
    graph_cache_size: int = Field(100_000, ge=1, description="most neighbour lists kept (least recently used dropped)")

    @pydantic.field_validator("radial_MLP")
    @classmethod
    def _positive_widths(cls, widths: list[int]) -> list[int]:
        if any(w <= 0 for w in widths):
            raise ValueError("radial_MLP widths must be positive")
        return widths

    def hidden_irreps(self) -> str:
        """``channels x (0e + 1o + 2e ...)`` up to ``max_L``, as mace_run_train builds it."""
        parities = "eo"
        return " + ".join(f"{self.channels}x{ell}{parities[ell % 2]}" for ell in range(self.max_L + 1))
