"""The HIP-NN :class:`~kdframe.architecture.Architecture`."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import ClassVar

import torch

from kdframe.architecture import Architecture, EnergyModel

from .hyperparameters import HipnnHyperparameters

_PREPARED = False


class HipnnArchitecture(Architecture):
    """HIP-NN (l_max 0) and HIP-NN-TS (l_max 1, 2) from hippynn; any number of heads on one shared network."""

    name: ClassVar[str] = "hippynn"
    Hyperparameters: ClassVar[type[HipnnHyperparameters]] = HipnnHyperparameters
    periodic: ClassVar[bool] = True
    regularisers: ClassVar[tuple[str, ...]] = ("hierarchicality",)

    def prepare(self) -> None:
        """Import hippynn once and pick its message-passing kernels.

        Without CUDA (and unless ``HIPPYNN_USE_CUSTOM_KERNELS`` is set) use hippynn's numba kernels, on as many
        threads as torch: faster than its "sparse" kernels (`benchmarks/results/hipnn_kernels.md`), after about
        10 s of compiling per machine and dtype (numba's cache). Without numba use "sparse": hippynn's CPU default
        is then torch.compile'd, which costs about a minute of compiling and recompiles as batch shapes change.
        With CUDA keep hippynn's own choice (triton where available).
        """
        global _PREPARED
        if _PREPARED:
            return
        # hippynn prints every batch holding a pair closer than ~1.07 x dist_soft_min; stretched O-H/N-H bonds of
        # normal-mode samples do that all the time. Off unless the user asks (HIPPYNN_WARN_LOW_DISTANCES=true).
        os.environ.setdefault("HIPPYNN_WARN_LOW_DISTANCES", "false")
        with warnings.catch_warnings():  # import-time notices about missing GPU kernel packages
            warnings.filterwarnings("ignore", message="triton, cupy and numba are not available")
            warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
            import hippynn
        if not torch.cuda.is_available() and "HIPPYNN_USE_CUSTOM_KERNELS" not in os.environ:
            hippynn.set_custom_kernels(cpu_kernels())
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        _PREPARED = True

    def build(self, hyperparameters: HipnnHyperparameters, species: Sequence[int], heads: Sequence[str]) -> EnergyModel:
        self.prepare()
        from .graph import build_graph
        from .model import HipnnEnergyModel

        graph = build_graph(hyperparameters, species, len(heads))
        return HipnnEnergyModel(graph.module(), len(heads), hyperparameters.dist_hard_max)


def cpu_kernels() -> str:
    """hippynn's fastest CPU message-passing kernels that are installed: "numba" (on torch's thread count), else
    "sparse"."""
    try:
        import numba
        from hippynn.custom_kernels import env_numba
    except ImportError:
        return "sparse"
    threads = torch.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(threads)  # numba's OpenMP layer, started by the line above, resets torch's count
    # hippynn compiles its numba kernels in every process (~10 s per dtype); numba's on-disk cache (next to the
    # module, else the user's cache folder) makes that once per machine. Its Dispatcher lies under hippynn's
    # via_numpy wrapper; where that layout differs, compiling per process is the price.
    for kernel in (env_numba.WrappedEnvsum, env_numba.WrappedSensesum, env_numba.WrappedFeatsum):
        dispatcher = getattr(kernel.cpu_kernel, "__wrapped__", None)
        if hasattr(dispatcher, "enable_caching"):
            dispatcher.enable_caching()
    return "numba"
