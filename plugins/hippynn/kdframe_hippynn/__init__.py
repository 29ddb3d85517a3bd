"""kdframe plugin: the HIP-NN architecture from hippynn (``architecture: hippynn``)."""

from __future__ import annotations

from collections.abc import Callable

from kdframe import hookimpl

from .architecture import HipnnArchitecture
from .export import save_hippynn_model
from .hyperparameters import HipnnHyperparameters

__all__ = ["HipnnArchitecture", "HipnnHyperparameters", "register_architectures", "save_hippynn_model"]


@hookimpl
def register_architectures(register: Callable) -> None:
    register(HipnnArchitecture())
