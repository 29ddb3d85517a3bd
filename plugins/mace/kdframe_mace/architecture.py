"""``MaceArchitecture``: builds a multi-head ``ScaleShiftMACE`` wrapped as a kdframe ``EnergyModel``."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import pydantic
import torch

from kdframe.architecture import Architecture, EnergyModel
from kdframe.errors import ConfigError

from .hyperparameters import MaceHyperparameters

_NO_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
# e3nn compiles its code-generated modules with torch.jit.script; the warnings that brings are not actionable.
_BUILD_NOISE = ("`torch.jit.script` is deprecated", "The TorchScript type system doesn't support")


def import_mace() -> None:
    """Import mace (before e3nn), quietly, without leaving its process-wide torch.load override behind.

    ``import mace`` sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (unsafe pickle loading for every
    later ``torch.load`` without an explicit ``weights_only``) and prints a notice when
    cuequivariance is absent. kdframe never unpickles mace models, so the variable is put
    back as it was once the import is done.
    """
    if "mace.modules" in sys.modules:
        return
    previous = os.environ.get(_NO_WEIGHTS_ONLY)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            for message in (f"Environment variable {_NO_WEIGHTS_ONLY}", *_BUILD_NOISE):
                warnings.filterwarnings("ignore", message=message)
            import mace.modules  # noqa: F401
    finally:
        if previous is None:
            os.environ.pop(_NO_WEIGHTS_ONLY, None)
        else:
            os.environ[_NO_WEIGHTS_ONLY] = previous


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """MACE creates its buffers (r_max, scale, E0) in torch's default dtype, so build under the model's dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def cueq_config(hp: MaceHyperparameters) -> Any:
    """mace's cuequivariance settings, or None for the e3nn path.

    Convolutions are fused only where the model is built with CUDA and cuequivariance's CUDA kernels
    (cuequivariance-ops-torch-cu12/13) present: without them the fused layer cannot be built at all.
    """
    for key in ("cuequivariance", "reduced_cg"):
        if getattr(hp, key) and not importable("cuequivariance_torch"):
            raise ConfigError(
                f"model.{key}", "needs cuequivariance-torch, which is not installed "
                "(pip install 'kdframe-mace[cuequivariance]'); set it to false to use e3nn"
            )
    if not hp.cuequivariance:
        return None
    from mace.modules.wrapper_ops import CUET_AVAILABLE, CuEquivarianceConfig

    if not CUET_AVAILABLE:
        raise ConfigError("model.cuequivariance", "cuequivariance-torch is installed but mace could not import it")
    kernels = importable("cuequivariance_ops_torch")
    if torch.cuda.is_available() and not kernels:
        warnings.warn("cuequivariance: CUDA kernels not installed (pip install 'kdframe-mace[cuequivariance-cu12]' "
                      "or -cu13); running its unoptimised torch fallback, slower than e3nn", stacklevel=2)
    return CuEquivarianceConfig(enabled=True, layout="ir_mul", group="O3_e3nn", optimize_all=True,
                                conv_fusion=torch.cuda.is_available() and kernels)


class MaceArchitecture(Architecture):
    """MACE (Batatia et al. 2022) through mace-torch; one readout column per fidelity head."""

    name: ClassVar[str] = "mace"
    Hyperparameters: ClassVar[type[pydantic.BaseModel]] = MaceHyperparameters
    periodic: ClassVar[bool] = True
    regularisers: ClassVar[tuple[str, ...]] = ()

    def prepare(self) -> None:
        import_mace()

    def build(self, hyperparameters: pydantic.BaseModel, species: Sequence[int], heads: Sequence[str]) -> EnergyModel:
        assert isinstance(hyperparameters, MaceHyperparameters)
        self.prepare()
        from e3nn import o3
        from mace import modules

        from .model import MaceEnergyModel

        hp = hyperparameters
        heads = list(heads)
        if len(set(heads)) != len(heads) or not heads:
            raise ConfigError("heads", f"need distinct, non-empty head names, got {heads}")
        zs = sorted(int(z) for z in species)
        dtype = getattr(torch, hp.dtype)
        interaction = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
        with default_dtype(dtype), warnings.catch_warnings():
            for message in _BUILD_NOISE:
                warnings.filterwarnings("ignore", message=message)
            mace = modules.ScaleShiftMACE(
                r_max=hp.r_max,
                num_bessel=hp.num_radial_basis,
                num_polynomial_cutoff=hp.num_cutoff_basis,
                max_ell=hp.max_ell,
                interaction_cls=interaction,
                interaction_cls_first=interaction,
                num_interactions=hp.num_interactions,
                num_elements=len(zs),
                hidden_irreps=o3.Irreps(hp.hidden_irreps()),
                MLP_irreps=o3.Irreps(hp.MLP_irreps.strip()),
                # E0 = 0: the core's per-species reference energies play that role.
                atomic_energies=torch.zeros(len(heads), len(zs)).numpy(),
                avg_num_neighbors=hp.avg_num_neighbors,
                atomic_numbers=zs,
                correlation=hp.correlation,
                gate=modules.gate_dict["silu"],
                radial_MLP=list(hp.radial_MLP),
                heads=heads,
                # One entry per head: ScaleShiftBlock indexes scale/shift by head.
                atomic_inter_scale=[hp.atomic_inter_scale] * len(heads),
                atomic_inter_shift=[hp.atomic_inter_shift] * len(heads),
                cueq_config=cueq_config(hp),
                # mace defaults to the reduced basis whenever cuequivariance-torch is importable, which
                # would change a model's weights with the environment; kdframe makes the choice explicit.
                use_reduced_cg=hp.reduced_cg,
            )
        return MaceEnergyModel(mace.to(dtype), hp, zs, heads)
