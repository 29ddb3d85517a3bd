"""Loading plugins from the ``kdframe`` entry-point group and looking up what they register."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import ConfigError

# Core features are plugins too, declared in kdframe's own pyproject under this group.
ENTRY_POINT_GROUP = "kdframe"


@dataclass
class Registry:
    """What every loaded plugin registered, by kind and name."""

    architectures: dict[str, Any] = field(default_factory=dict)
    knowledge_sources: dict[str, Any] = field(default_factory=dict)
    schedules: dict[str, Callable] = field(default_factory=dict)
    labelers: dict[str, Any] = field(default_factory=dict)
    workflows: dict[str, Any] = field(default_factory=dict)
    pretrained: dict[str, Callable] = field(default_factory=dict)

    def periodic_architectures(self) -> list[str]:
        """Names of the architectures that handle periodic configurations (``periodic = True``)."""
        return sorted(name for name, arch in self.architectures.items() if arch.periodic)

    def lookup(self, kind: str, name: str, where: str) -> Any:
        table: dict[str, Any] = getattr(self, kind)
        if name not in table:
            raise ConfigError(where, f"unknown {kind.rstrip('s').replace('_', ' ')} {name!r}", table)
        return table[name]


# Entry points that failed to import: name -> reason. Shown by `kdframe plugins`.
BROKEN: dict[str, str] = {}
# Loaded entry points: name -> (distribution, version).
LOADED: dict[str, tuple[str, str]] = {}


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    """Every plugin of the entry-point group; one that fails to import is skipped with a warning,
    so a broken third-party package never stops unrelated work (e.g. hours of labelling)."""
    pm = pluggy.PluginManager("kdframe")
    pm.add_hookspecs(hookspecs)
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if pm.get_plugin(entry_point.name) is not None:
            continue
        try:
            plugin = entry_point.load()
        except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is reported the same way
            BROKEN[entry_point.name] = f"{entry_point.value}: {exc.__class__.__name__}: {exc}"
            warnings.warn(f"kdframe plugin {entry_point.name!r} failed to load and is skipped "
                          f"({BROKEN[entry_point.name]})", stacklevel=2)
            continue
        pm.register(plugin, name=entry_point.name)
        LOADED[entry_point.name] = (entry_point.dist.name, entry_point.dist.version)
    return pm


@functools.cache
def registry() -> Registry:
    reg = Registry()
    hook = plugin_manager().hook
    hook.register_architectures(register=lambda arch: reg.architectures.__setitem__(arch.name, arch))
    hook.register_knowledge_sources(register=lambda cls: reg.knowledge_sources.__setitem__(cls.name, cls))
    hook.register_schedules(register=lambda name, factory: reg.schedules.__setitem__(name, factory))
    hook.register_labelers(register=lambda labeler: reg.labelers.__setitem__(labeler.method, labeler))
    hook.register_workflows(register=lambda workflow: reg.workflows.__setitem__(workflow.name, workflow))
    hook.register_pretrained(register=lambda name, loader: reg.pretrained.__setitem__(name, loader))
    return reg


def installed_plugins() -> list[tuple[str, str, str]]:
    """(plugin name, distribution, version) for every loaded plugin."""
    plugin_manager()
    return sorted((name, dist, version) for name, (dist, version) in LOADED.items())
