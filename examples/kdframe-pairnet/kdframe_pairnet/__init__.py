"""kdframe plugin: PairNet, a small SchNet-style network in plain torch (``architecture: pairnet``).

This package is the worked example of ``docs/plugins.md``: the hook below plus the
``[project.entry-points.kdframe]`` line of ``pyproject.toml`` are all the registration there is.
"""

from __future__ import annotations

from collections.abc import Callable

from kdframe import hookimpl

from .architecture import PairNetArchitecture, PairNetHyperparameters
from .model import PairNetModel

__all__ = ["PairNetArchitecture", "PairNetHyperparameters", "PairNetModel", "register_architectures"]


@hookimpl
def register_architectures(register: Callable) -> None:
    register(PairNetArchitecture())
