"""The whole plugin contract of kdframe.

A plugin is a module (or object) with functions named after these hooks,
decorated with ``kdframe.hookimpl``, and listed in the ``kdframe`` entry-point
group of its package::

    [project.entry-points.kdframe]
    myarch = "kdframe_myarch"

Built-in features are plugins loaded exactly the same way; the core never
imports a plugin by name. Each hook receives a ``register`` callable.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("kdframe")
hookimpl = pluggy.HookimplMarker("kdframe")


@hookspec
def register_architectures(register: Callable) -> None:
    """Register MLIP architectures: ``register(ArchitectureSubclass())``.

    The architecture's ``name`` is what YAML files write as ``architecture:``.
    """


@hookspec
def register_knowledge_sources(register: Callable) -> None:
    """Register knowledge sources: ``register(KnowledgeSourceSubclass)`` (the class, keyed by its ``name``)."""


@hookspec
def register_schedules(register: Callable) -> None:
    """Register loss-weight schedules: ``register(name, factory)`` where ``factory(spec) -> Schedule``."""


@hookspec
def register_labelers(register: Callable) -> None:
    """Register quantum-chemistry labelers: ``register(LabelerSubclass())`` keyed by its ``method``."""


@hookspec
def register_commands(subparsers) -> None:
    """Add sub-commands to the ``kdframe`` CLI: ``subparsers`` is an argparse sub-parser action.

    Set ``func=callable(args) -> int | None`` on the parser you add.
    """


@hookspec
def register_workflows(register: Callable) -> None:
    """Register workflows: ``register(WorkflowSubclass())``; YAML selects one with ``workflow: NAME``."""


@hookspec
def register_pretrained(register: Callable) -> None:
    """Register pretrained models: ``register(name, loader)``; ``loader()`` returns a
    :class:`~kdframe.potential.Ensemble` (its members are the teachers) or raises
    :class:`~kdframe.errors.DataError` saying how to get the files. YAML: ``teachers: {pretrained: NAME}``.
    """
