"""Loading plugins from the ``kdframe`` entry-point group and looking up what they register."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
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

    def lookup(self, kind: str, name: str, where: str) -> Any:
        table: dict[str, Any] = getattr(self, kind)
        if name not in table:
            raise ConfigError(where, f"unknown {kind.rstrip('s').replace('_', ' ')} {name!r}", table)
        return table[name]


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("kdframe")
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
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
    pm = plugin_manager()
    return sorted((pm.get_name(plugin), dist.project_name, dist.version) for plugin, dist in pm.list_plugin_distinfo())
