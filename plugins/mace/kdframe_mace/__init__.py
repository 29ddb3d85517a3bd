"""kdframe plugin: the MACE architecture (``architecture: mace``).

Importing this module is cheap; ``mace`` itself is imported only when a model is built.
"""

from __future__ import annotations

from collections.abc import Callable

from kdframe import hookimpl

from .architecture import MaceArchitecture
from .convert import save_mace_model, with_cuequivariance
from .hyperparameters import MaceHyperparameters

__all__ = ["MaceArchitecture", "MaceHyperparameters", "register_architectures", "save_mace_model",
           "with_cuequivariance"]


@hookimpl
def register_architectures(register: Callable) -> None:
    register(MaceArchitecture())
