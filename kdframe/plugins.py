"""Loading plugins from the ``kdframe`` entry-point group and looking up what they register.

Every entry point of the group is a plugin (kdframe's own workflows, schedules and knowledge sources included).
A plugin that cannot be imported, whose hooks raise, register something that is not what the hook asks for, or
use a hook name kdframe does not know, is skipped as a whole with a warning naming its distribution, and
``kdframe plugins`` lists it as failed: a broken plugin never stops unrelated work. A name registered by two
plugins is used by neither (``Registry.lookup`` says which two packages claim it), unless one of them is
kdframe's own core, which keeps it. A plugin that registers nothing is reported too.

``KDFRAME_PLUGINS=hippynn,torchani`` (entry-point names, comma-separated) loads only the named plugins, plus
kdframe's own core entry points, which always load: runs and test suites that do not depend on whatever else
is installed. Unset, every installed plugin loads; set but empty, only the core.
"""

from __future__ import annotations

import difflib
import functools
import os
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
# Comma-separated entry-point names: load only these plugins (the core's own entry points always load).
SELECT_ENV = "KDFRAME_PLUGINS"
CORE_DISTRIBUTION = "kdframe"

# hook -> (registry table, what register() takes, what the table is keyed by)
HOOKS: dict[str, str] = {
    "register_architectures": "architectures",
    "register_knowledge_sources": "knowledge_sources",
    "register_schedules": "schedules",
    "register_labelers": "labelers",
    "register_workflows": "workflows",
    "register_pretrained": "pretrained",
}
HOOK_NAMES = tuple(name for name in dir(hookspecs) if name.startswith("register_"))


class PluginError(Exception):
    """What is wrong with one plugin's registration (becomes its entry in :data:`BROKEN`)."""


@dataclass
class Registry:
    """What every loaded plugin registered, by kind and name."""

    architectures: dict[str, Any] = field(default_factory=dict)
    knowledge_sources: dict[str, Any] = field(default_factory=dict)
    schedules: dict[str, Callable] = field(default_factory=dict)
    labelers: dict[str, Any] = field(default_factory=dict)
    workflows: dict[str, Any] = field(default_factory=dict)
    pretrained: dict[str, Callable] = field(default_factory=dict)
    # (kind, name) -> the plugins that both registered it (then neither is used)
    conflicts: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def periodic_architectures(self) -> list[str]:
        """Names of the architectures that handle periodic configurations (``periodic = True``)."""
        return sorted(name for name, arch in self.architectures.items() if getattr(arch, "periodic", False))

    def lookup(self, kind: str, name: str, where: str) -> Any:
        table: dict[str, Any] = getattr(self, kind)
        what = kind.rstrip("s").replace("_", " ")
        if name not in table and (kind, name) in self.conflicts:
            claimants = self.conflicts[(kind, name)]
            raise ConfigError(where, f"{what} {name!r} is registered by two plugins, {' and '.join(claimants)}, so "
                                     f"neither is used; uninstall one, or load only one with {SELECT_ENV}=<entry "
                                     "point names, comma-separated>")
        if name not in table:
            raise ConfigError(where, f"unknown {what} {name!r}", table)
        return table[name]


@dataclass
class PluginRecord:
    """One entry point of the ``kdframe`` group and what became of it."""

    name: str  # entry-point name
    value: str  # the module (or object) it points to
    distribution: str
    version: str
    core: bool  # kdframe's own entry point (always loaded)
    status: str = "loaded"  # loaded | failed | not selected
    problems: list[str] = field(default_factory=list)  # why it failed
    notes: list[str] = field(default_factory=list)  # names refused because another plugin has them
    registered: list[str] = field(default_factory=list)  # "architecture hippynn", ...
    hooks: list[str] = field(default_factory=list)  # the kdframe hooks it implements

    @property
    def package(self) -> str:
        """The distribution (the package to fix or uninstall), its version and the entry point."""
        return f"distribution {self.distribution} {self.version}, entry point {self.name} = {self.value}"

    @property
    def label(self) -> str:
        """How messages name the plugin: entry point and distribution."""
        return f"{self.name!r} ({self.package})"


# Every entry point of the group, in load order: name -> record. Rebuilt by plugin_manager().
PLUGINS: dict[str, PluginRecord] = {}
# Plugins that failed (import, registration, unknown hooks) or were named in KDFRAME_PLUGINS but are not
# installed: name -> reason. Shown by `kdframe plugins`.
BROKEN: dict[str, str] = {}
# Loaded entry points: name -> (distribution, version).
LOADED: dict[str, tuple[str, str]] = {}


def selected() -> set[str] | None:
    """The entry-point names :data:`SELECT_ENV` asks for, or None (every plugin) when it is not set."""
    raw = os.environ.get(SELECT_ENV)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def _record(entry_point: Any) -> PluginRecord:
    dist = getattr(entry_point, "dist", None)
    distribution = getattr(dist, "name", None) or "?"
    version = getattr(dist, "version", None) or "?"
    value = str(getattr(entry_point, "value", "?"))
    normalised = distribution.lower().replace("_", "-")
    core = normalised == CORE_DISTRIBUTION or (dist is None and (value == "kdframe" or value.startswith("kdframe.")))
    if distribution == "?" and core:
        distribution = CORE_DISTRIBUTION
    return PluginRecord(entry_point.name, value, distribution, version, core)


def _fail(record: PluginRecord, problem: str) -> None:
    """Mark a plugin failed (skipped as a whole): ``problem`` starts with a verb, e.g. "failed to load: ..."."""
    record.status = "failed"
    record.problems.append(problem)
    BROKEN[record.name] = f"{'; '.join(record.problems)} [{record.package}]"
    LOADED.pop(record.name, None)
    warnings.warn(f"kdframe plugin {record.name!r} {problem} [{record.package}]; it is skipped", stacklevel=3)


def _hook_problems(pm: pluggy.PluginManager, record: PluginRecord, plugin: Any) -> list[str]:
    """Unknown hook names (a misspelling registers nothing), hook functions without ``@hookimpl``."""
    problems = []
    implemented = set()
    for hook_name, caller in vars(pm.hook).items():
        if hook_name.startswith("_"):
            continue
        for impl in caller.get_hookimpls():
            if impl.plugin_name != record.name:
                continue
            if caller.has_spec():
                implemented.add(hook_name)
            elif not impl.optionalhook:
                close = difflib.get_close_matches(hook_name, HOOK_NAMES, n=1, cutoff=0.6)
                problems.append(f"{hook_name!r} is not a kdframe hook" + (f" (did you mean {close[0]!r}?)" if close
                                else f" (the hooks: {', '.join(HOOK_NAMES)})"))
    for hook_name in HOOK_NAMES:
        if hook_name not in implemented and callable(getattr(plugin, hook_name, None)):
            problems.append(f"{hook_name} is not decorated with @kdframe.hookimpl, so kdframe never calls it")
    for attribute in dir(plugin):
        if attribute in HOOK_NAMES or not attribute.startswith("register") or attribute in vars(pm.hook):
            continue
        close = difflib.get_close_matches(attribute, HOOK_NAMES, n=1, cutoff=0.85)
        if close and callable(getattr(plugin, attribute, None)):
            problems.append(f"{attribute!r} is not a kdframe hook (did you mean {close[0]!r}?)")
    record.hooks = sorted(implemented)
    return problems


@functools.cache
def plugin_manager() -> pluggy.PluginManager:
    """Every plugin of the entry-point group (only those :data:`SELECT_ENV` names, if set, and the core's); one that
    fails to import or implements unknown hooks is skipped with a warning, so a broken third-party package never
    stops unrelated work (e.g. hours of labelling)."""
    for table in (PLUGINS, BROKEN, LOADED):
        table.clear()
    pm = pluggy.PluginManager("kdframe")
    pm.add_hookspecs(hookspecs)
    wanted = selected()
    records = []
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        record = _record(entry_point)
        if record.name in PLUGINS:  # the same distribution seen twice on sys.path
            continue
        PLUGINS[record.name] = record
        records.append((record, entry_point))
    records.sort(key=lambda pair: (not pair[0].core, pair[0].name))  # deterministic: the core first, then by name
    PLUGINS.clear()
    PLUGINS.update((record.name, record) for record, _ in records)
    for record, entry_point in records:
        if wanted is not None and not record.core and record.name not in wanted:
            record.status = "not selected"
            continue
        try:
            plugin = entry_point.load()
        except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is reported the same way
            _fail(record, f"failed to load: {exc.__class__.__name__}: {exc}")
            continue
        try:
            pm.register(plugin, name=record.name)
        except Exception as exc:  # noqa: BLE001 - pluggy validates hook signatures
            _fail(record, f"failed to register: its hooks do not match kdframe's: {exc}")
            continue
        LOADED[record.name] = (record.distribution, record.version)
        problems = _hook_problems(pm, record, plugin)
        if problems:
            pm.unregister(name=record.name)
            _fail(record, f"failed to register: {'; '.join(problems)}")
    for name in sorted((wanted or set()) - set(PLUGINS)):
        BROKEN[name] = (f"is named in {SELECT_ENV} but no installed plugin has that entry-point name (installed: "
                        f"{', '.join(sorted(r.name for r in PLUGINS.values() if not r.core)) or 'none'})")
        warnings.warn(f"kdframe plugin {name!r} {BROKEN[name]}", stacklevel=2)
    return pm


def _describe(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_registered(kind: str, args: tuple, kwargs: dict) -> tuple[str, Any]:
    """``(name, object)`` of one ``register(...)`` call of hook ``kind``, or PluginError saying what is wrong."""
    if kwargs:
        raise PluginError(f"register() takes no keyword arguments (got {', '.join(kwargs)})")
    if kind in ("schedules", "pretrained"):
        if len(args) != 2:
            raise PluginError(f"register(name, {'factory' if kind == 'schedules' else 'loader'}) takes 2 arguments, "
                              f"got {len(args)}")
        name, obj = args
        if not callable(obj):
            raise PluginError(f"register({name!r}, ...): {_describe(obj)} is not callable")
    else:
        if len(args) != 1:
            raise PluginError(f"register() takes one object, got {len(args)} arguments")
        (obj,) = args
        name = _check_object(kind, obj)
    if not isinstance(name, str) or not name:
        raise PluginError(f"{_describe(obj)} has no name (a non-empty string): got {name!r}")
    return name, obj


def _check_object(kind: str, obj: Any) -> Any:
    if kind == "architectures":
        from .architecture import Architecture

        if isinstance(obj, type):
            hint = f": call register({obj.__name__}())" if issubclass(obj, Architecture) else ""
            raise PluginError(f"registered the class {obj.__name__}, not an Architecture instance{hint}")
        if not isinstance(obj, Architecture):
            raise PluginError(f"registered {_describe(obj)} ({type(obj).__name__}), not an instance of "
                              "kdframe.architecture.Architecture")
        import pydantic

        hp = getattr(obj, "Hyperparameters", None)
        if not (isinstance(hp, type) and issubclass(hp, pydantic.BaseModel)):
            raise PluginError(f"architecture {getattr(obj, 'name', '?')!r}: Hyperparameters must be a "
                              "pydantic.BaseModel subclass")
        return getattr(obj, "name", None)
    if kind == "knowledge_sources":
        from .knowledge.base import KnowledgeSource

        if not (isinstance(obj, type) and issubclass(obj, KnowledgeSource)):
            raise PluginError(f"registered {_describe(obj)}, not a subclass of kdframe.knowledge.base.KnowledgeSource "
                              "(register the class itself)")
        return getattr(obj, "name", None)
    if kind == "labelers":
        from .labeler import Labeler

        if isinstance(obj, type):
            raise PluginError(f"registered the class {obj.__name__}, not a Labeler instance: call "
                              f"register({obj.__name__}())")
        if not isinstance(obj, Labeler):
            raise PluginError(f"registered {_describe(obj)} ({type(obj).__name__}), not an instance of "
                              "kdframe.labeler.Labeler")
        return getattr(obj, "method", None)
    if kind == "workflows":
        if isinstance(obj, type):
            raise PluginError(f"registered the class {obj.__name__}, not a workflow instance: call "
                              f"register({obj.__name__}())")
        if not callable(getattr(obj, "run", None)):
            raise PluginError(f"registered {_describe(obj)} ({type(obj).__name__}), not a workflow (no run method)")
        return getattr(obj, "name", None)
    raise PluginError(f"unknown kind {kind}")  # pragma: no cover


def _call(impl: Any, **kwargs: Any) -> Any:
    if impl.hookwrapper or getattr(impl, "wrapper", False):
        raise PluginError(f"{impl.function.__name__} is a hook wrapper; kdframe calls plain hooks only")
    return impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})


def _where(hook: str, exc: BaseException) -> str:
    return f"{hook}: {exc}" if isinstance(exc, PluginError) else f"{hook} raised {exc.__class__.__name__}: {exc}"


@functools.cache
def registry() -> Registry:
    """What the loaded plugins register. Each plugin's hooks are called on their own: a plugin whose hook raises,
    registers a wrong object or returns it instead of calling ``register`` is skipped as a whole (with a warning,
    listed by ``kdframe plugins``); the others are unaffected."""
    pm = plugin_manager()
    for record in PLUGINS.values():  # results of an earlier registry() call (plugins failed then stay failed)
        record.registered.clear()
        record.notes.clear()
    staged: dict[str, list[tuple[str, str, Any]]] = {}
    for record in [r for r in PLUGINS.values() if r.status == "loaded"]:
        plugin = pm.get_plugin(record.name)
        if plugin is None:
            continue
        entries: list[tuple[str, str, Any]] = []
        try:
            for hook, kind in HOOKS.items():
                for impl in getattr(pm.hook, hook).get_hookimpls():
                    if impl.plugin_name != record.name:
                        continue

                    def register(*args: Any, _kind: str = kind, _hook: str = hook, **kwargs: Any) -> None:
                        try:
                            name, obj = _check_registered(_kind, args, kwargs)
                        except PluginError as exc:
                            raise PluginError(f"{_hook}: {exc}") from None
                        entries.append((_kind, name, obj))

                    try:
                        returned = _call(impl, register=register)
                    except PluginError as exc:
                        raise PluginError(str(exc) if str(exc).startswith(hook) else f"{hook}: {exc}") from None
                    except Exception as exc:  # noqa: BLE001 - a plugin's own bug is reported, not propagated
                        raise PluginError(_where(hook, exc)) from exc
                    if returned is not None:
                        raise PluginError(f"{hook} returned {_describe(returned)} instead of calling "
                                          f"register(...) with it (kdframe ignores what hooks return)")
        except PluginError as exc:
            pm.unregister(name=record.name)
            _fail(record, f"failed to register: {exc}")
            continue
        staged[record.name] = entries
    reg = Registry()
    owners: dict[tuple[str, str], str] = {}
    for plugin_name, entries in staged.items():
        record = PLUGINS[plugin_name]
        for kind, name, obj in entries:
            key = (kind, name)
            table: dict[str, Any] = getattr(reg, kind)
            record.registered.append(f"{kind.rstrip('s').replace('_', ' ')} {name}")
            if key in reg.conflicts:
                reg.conflicts[key].append(record.label)
                continue
            if key not in owners:
                owners[key] = plugin_name
                table[name] = obj
                continue
            first = PLUGINS[owners[key]]
            if first.name == plugin_name:  # registered twice by the same plugin: the last one, as before
                table[name] = obj
                continue
            what = f"{kind.rstrip('s').replace('_', ' ')} {name!r}"
            if first.core and not record.core:
                message = f"{what} is kdframe's own ({first.package}); this plugin's is refused"
                record.notes.append(message)
                warnings.warn(f"kdframe plugin {record.label}: {message}", stacklevel=2)
                continue
            del table[name]
            reg.conflicts[key] = [first.label, record.label]
            for claimant in (first, record):
                claimant.notes.append(f"{what} is also registered by {(record if claimant is first else first).label}"
                                         "; neither is used")
            warnings.warn(f"kdframe: {what} is registered by two plugins, {first.label} and {record.label}; neither "
                          f"is used (uninstall one, or choose with {SELECT_ENV})", stacklevel=2)
    for record in PLUGINS.values():
        if record.status == "loaded" and not record.registered and "register_commands" not in record.hooks:
            pm.unregister(name=record.name)
            _fail(record, "registered nothing: no @kdframe.hookimpl hook of it calls register(...) (a misspelt "
                          "or undecorated hook, or one that returns its object?)")
    return reg


def add_commands(subparsers: Any) -> None:
    """Call every plugin's ``register_commands`` hook on its own: one that raises is reported and skipped (its
    half-added sub-commands may remain) instead of breaking every ``kdframe`` command."""
    pm = plugin_manager()
    for impl in pm.hook.register_commands.get_hookimpls():
        record = PLUGINS.get(impl.plugin_name)
        try:
            _call(impl, subparsers=subparsers)
        except Exception as exc:  # noqa: BLE001 - a plugin's own bug is reported, not propagated
            if record is None:
                raise
            _fail(record, f"failed to add its commands: {_where('register_commands', exc)}")


def installed_plugins() -> list[tuple[str, str, str]]:
    """(plugin name, distribution, version) for every loaded plugin."""
    plugin_manager()
    return sorted((name, dist, version) for name, (dist, version) in LOADED.items())


def describe() -> str:
    """What ``kdframe plugins`` prints: every plugin with its state, then what is registered, by kind."""
    reg = registry()
    lines = []
    wanted = selected()
    if wanted is not None:
        lines.append(f"{SELECT_ENV}={','.join(sorted(wanted))}: only these plugins and kdframe's core are loaded")
    for record in PLUGINS.values():
        if record.status == "failed":
            lines.append(f"  {record.name:32s} FAILED TO LOAD: {BROKEN[record.name]}")
            continue
        state = f"  (not selected by {SELECT_ENV})" if record.status == "not selected" else ""
        lines.append(f"  {record.name:32s} {record.distribution} {record.version}{state}")
        for note in record.notes:
            lines.append(f"  {'':32s} WARNING: {note}")
    for name, reason in sorted(BROKEN.items()):
        if name not in PLUGINS:
            lines.append(f"  {name:32s} FAILED TO LOAD: {reason}")
    for kind in HOOKS.values():
        lines.append(f"{kind}: {', '.join(sorted(getattr(reg, kind))) or '(none)'}")
    for (kind, name), claimants in sorted(reg.conflicts.items()):
        lines.append(f"refused {kind.rstrip('s').replace('_', ' ')} {name!r}: registered by {' and '.join(claimants)}")
    return "\n".join(lines)


def reset() -> None:
    """Forget the loaded plugins and the registry (after changing :data:`SELECT_ENV` or the entry points)."""
    plugin_manager.cache_clear()
    registry.cache_clear()
