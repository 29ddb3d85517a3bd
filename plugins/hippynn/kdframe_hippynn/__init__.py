"""kdframe plugin: the HIP-NN architecture from hippynn (``architecture: hippynn``)."""

from __future__ import annotations

from collections.abc import Callable

from kdframe import hookimpl

from .architecture import HipnnArchitecture
from .hyperparameters import HipnnHyperparameters

__all__ = ["HipnnArchitecture", "HipnnHyperparameters", "register_architectures"]


@hookimpl
def register_architectures(register: Callable) -> None:
    register(HipnnArchitecture())
