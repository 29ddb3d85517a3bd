"""kdframe plugin: the TorchANI architecture (``architecture: torchani``) and pretrained ANI teachers
(``ani1x``, ``ani1ccx``: H, C, N, O; ``ani2x``: H, C, N, O, F, S, Cl; 8 members each).

Importing this module is cheap; ``torchani`` itself is imported only when a model is built.
"""

from __future__ import annotations

from collections.abc import Callable

from kdframe import hookimpl

from .architecture import AniArchitecture
from .hyperparameters import AevParameters, AniHyperparameters

PRETRAINED_NAMES = ("ani1x", "ani1ccx", "ani2x")  # the keys of .pretrained.PRETRAINED (kept here: no torch import)

__all__ = ["AevParameters", "AniArchitecture", "AniHyperparameters", "register_architectures", "register_commands",
           "fetch", "load_pretrained", "load_pretrained_ensemble"]


def __getattr__(name: str):
    """``fetch``, ``load_pretrained`` and ``load_pretrained_ensemble`` from :mod:`.pretrained`, imported on use."""
    if name in ("fetch", "load_pretrained", "load_pretrained_ensemble"):
        from . import pretrained

        return getattr(pretrained, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def register_architectures(register: Callable) -> None:
    register(AniArchitecture())


@hookimpl
def register_pretrained(register: Callable) -> None:
    from functools import partial

    for name in PRETRAINED_NAMES:
        register(name, partial(_load_ensemble, name))


def _load_ensemble(name: str):
    """The fetched pretrained ensemble ``name`` (an AniEnsemble)."""
    from .pretrained import load_pretrained_ensemble

    return load_pretrained_ensemble(name)


@hookimpl
def register_commands(subparsers) -> None:
    from .cli import add_models_command

    add_models_command(subparsers)
