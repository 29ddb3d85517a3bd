"""Plugin registration (kdframe.plugins): every mistake a plugin author can make is one clear message naming the
distribution, the broken plugin is skipped, and unrelated work goes on. Fake plugins are built with pluggy's
markers and handed to kdframe through monkeypatched entry points (kdframe's own core entry points stay real)."""

from __future__ import annotations

import types
import warnings
from importlib import metadata

import pytest

from kdframe import hookimpl, plugins
from kdframe.cli import main
from kdframe.errors import ConfigError

from toy import ToyArchitecture


class FakeDist:
    def __init__(self, name: str, version: str = "1.0"):
        self.name, self.version = name, version


class FakeEntryPoint:
    """What kdframe reads of an importlib.metadata.EntryPoint."""

    def __init__(self, name: str, plugin, distribution: str | None = None):
        self.name, self.plugin = name, plugin
        self.value = f"fake_{name}"
        self.group = plugins.ENTRY_POINT_GROUP
        self.dist = FakeDist(distribution or f"kdframe-{name}")

    def load(self):
        if isinstance(self.plugin, Exception):
            raise self.plugin
        return self.plugin


def module(name: str, **functions) -> types.ModuleType:
    plugin = types.ModuleType(name)
    for key, value in functions.items():
        setattr(plugin, key, value)
    return plugin


class OtherArchitecture(ToyArchitecture):
    name = "other_toy"


def architecture_plugin(arch_name: str):
    arch = type(f"Arch_{arch_name}", (ToyArchitecture,), {"name": arch_name})

    @hookimpl
    def register_architectures(register):
        register(arch())

    return module(f"plugin_{arch_name}", register_architectures=register_architectures), arch


@pytest.fixture
def install(monkeypatch):
    """install(*entry_points): kdframe's core entry points plus these; a fresh plugin manager and registry."""
    core = [ep for ep in metadata.entry_points(group=plugins.ENTRY_POINT_GROUP)
            if ep.dist is not None and ep.dist.name == plugins.CORE_DISTRIBUTION]

    def install(*entry_points, select: str | None = None):
        if select is None:
            monkeypatch.delenv(plugins.SELECT_ENV, raising=False)
        else:
            monkeypatch.setenv(plugins.SELECT_ENV, select)
        monkeypatch.setattr(plugins.metadata, "entry_points", lambda group: [*core, *entry_points])
        plugins.reset()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            registry = plugins.registry()
        return registry, [str(w.message) for w in caught]

    yield install
    monkeypatch.undo()
    plugins.reset()


def single(messages: list[str], words: str) -> str:
    found = [m for m in messages if words in m]
    assert len(found) == 1, messages
    return found[0]


def test_a_good_plugin_registers_and_the_core_still_loads(install):
    plugin, arch = architecture_plugin("fake_arch")
    registry, messages = install(FakeEntryPoint("fake_arch", plugin))
    assert isinstance(registry.architectures["fake_arch"], arch)
    assert {"ekd", "train"} <= set(registry.workflows)
    assert not messages and not plugins.BROKEN
    assert plugins.LOADED["fake_arch"] == ("kdframe-fake_arch", "1.0")


@hookimpl
def _registers_a_string(register):
    register("hippynn")


@hookimpl
def _registers_the_class(register):
    register(OtherArchitecture)


@hookimpl
def _returns_the_object(register):
    return OtherArchitecture()


@hookimpl
def _raises(register):
    raise RuntimeError("no GPU here")


def _not_decorated(register):
    register(OtherArchitecture())


@hookimpl
def _registers_nothing(register):
    pass


CASES = {
    # plugin -> words its one message must contain
    "non_architecture": (module("p", register_architectures=_registers_a_string),
                         "failed to register: register_architectures: registered 'hippynn' (str), not an instance of "
                         "kdframe.architecture.Architecture"),
    "class_not_instance": (module("p", register_architectures=_registers_the_class),
                           "registered the class OtherArchitecture, not an Architecture instance: call "
                           "register(OtherArchitecture())"),
    "returns_object": (module("p", register_architectures=_returns_the_object),
                       "register_architectures returned <"),
    "hook_raises": (module("p", register_architectures=_raises),
                    "register_architectures raised RuntimeError: no GPU here"),
    "misspelt_hook": (module("p", register_architecture=_returns_the_object),
                      "'register_architecture' is not a kdframe hook (did you mean 'register_architectures'?)"),
    "misspelt_undecorated": (module("p", register_architecture=_not_decorated),
                             "'register_architecture' is not a kdframe hook (did you mean 'register_architectures'?)"),
    "no_hookimpl": (module("p", register_architectures=_not_decorated),
                    "register_architectures is not decorated with @kdframe.hookimpl"),
    "registers_nothing": (module("p", register_architectures=_registers_nothing), "registered nothing"),
    "import_error": (ModuleNotFoundError("No module named 'torch_cluster'"),
                     "failed to load: ModuleNotFoundError: No module named 'torch_cluster'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_broken_plugin_is_one_message_naming_its_distribution_and_is_skipped(case, install, capsys):
    broken, words = CASES[case]
    good, arch = architecture_plugin("good_arch")
    registry, messages = install(FakeEntryPoint("bad", broken, "kdframe-badpkg"), FakeEntryPoint("good_arch", good))
    message = single(messages, "'bad'")
    assert words in message and "kdframe-badpkg 1.0" in message and "it is skipped" in message, message
    assert words in plugins.BROKEN["bad"] and "kdframe-badpkg" in plugins.BROKEN["bad"]
    # unrelated work goes on: the good plugin and the core are registered, the broken one contributes nothing
    assert set(registry.architectures) == {"good_arch"}
    assert {"ekd", "train"} <= set(registry.workflows)
    assert "bad" not in plugins.LOADED
    # `kdframe plugins` works and lists it as failed
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.strip().startswith("bad "))
    assert "FAILED TO LOAD" in line and words in line and "kdframe-badpkg" in line, out
    assert "architectures: good_arch" in out
    assert "FAILED TO LOAD" in plugins.describe()


def test_the_same_architecture_name_from_two_packages_is_refused_naming_both(install):
    first, _ = architecture_plugin("hippynn")
    second, _ = architecture_plugin("hippynn")
    registry, messages = install(FakeEntryPoint("hippynn", first, "kdframe-hippynn"),
                                 FakeEntryPoint("evil", second, "kdframe-evil"))
    message = single(messages, "registered by two plugins")
    assert "kdframe-hippynn" in message and "kdframe-evil" in message
    assert "hippynn" not in registry.architectures
    with pytest.raises(ConfigError, match=r"model.architecture: architecture 'hippynn' is registered by two plugins, "
                                          r".* and .*, so neither is used; .*KDFRAME_PLUGINS") as refused:
        registry.lookup("architectures", "hippynn", "model.architecture")
    assert "'hippynn' (distribution kdframe-hippynn 1.0" in str(refused.value)
    assert "'evil' (distribution kdframe-evil 1.0" in str(refused.value)
    text = plugins.describe()
    assert "refused architecture 'hippynn'" in text and "WARNING: architecture 'hippynn' is also registered" in text


def test_kdframe_plugins_selects_the_plugin_with_that_name(install):
    first, arch = architecture_plugin("hippynn")
    second, _ = architecture_plugin("hippynn")
    registry, messages = install(FakeEntryPoint("hippynn", first), FakeEntryPoint("evil", second),
                                 select="hippynn")
    assert isinstance(registry.architectures["hippynn"], arch) and not messages
    assert plugins.PLUGINS["evil"].status == "not selected"
    assert {"ekd", "train"} <= set(registry.workflows)  # the core always loads
    assert "(not selected by KDFRAME_PLUGINS)" in plugins.describe()


def test_kdframe_plugins_empty_loads_only_the_core_and_flags_unknown_names(install):
    plugin, _ = architecture_plugin("fake_arch")
    registry, messages = install(FakeEntryPoint("fake_arch", plugin), select="")
    assert registry.architectures == {} and {"ekd", "train"} <= set(registry.workflows)
    registry, messages = install(FakeEntryPoint("fake_arch", plugin), select="fake_arch, hipynn")
    assert set(registry.architectures) == {"fake_arch"}
    assert "'hipynn' is named in KDFRAME_PLUGINS but no installed plugin has that entry-point name (installed: " \
           "fake_arch)" in single(messages, "hipynn")
    assert "hipynn" in plugins.BROKEN


def test_a_plugin_cannot_take_a_core_name(install):
    @hookimpl
    def register_workflows(register):
        register(types.SimpleNamespace(name="ekd", run=lambda run, until="run": "hijacked"))

    registry, messages = install(FakeEntryPoint("hijack", module("hijack", register_workflows=register_workflows)))
    assert registry.workflows["ekd"].__class__.__module__.startswith("kdframe.workflows")
    assert "workflow 'ekd' is kdframe's own (distribution kdframe" in single(messages, "hijack")


def test_a_broken_command_hook_does_not_break_the_cli(install):
    @hookimpl
    def register_commands(subparsers):
        raise ImportError("cannot import name 'x'")

    install(FakeEntryPoint("cmds", module("cmds", register_commands=register_commands)))
    import argparse

    parser = argparse.ArgumentParser()
    with pytest.warns(UserWarning, match=r"'cmds' failed to add its commands: register_commands raised ImportError"):
        plugins.add_commands(parser.add_subparsers())
    assert "cmds" in plugins.BROKEN


def test_other_kinds_are_checked_too(install):
    @hookimpl
    def register_schedules(register):
        register("warmup", 3.0)

    _, messages = install(FakeEntryPoint("sched", module("sched", register_schedules=register_schedules)))
    assert "register_schedules: register('warmup', ...): 3.0 is not callable" in single(messages, "sched")

    @hookimpl
    def register_knowledge_sources(register):
        register(object())

    _, messages = install(FakeEntryPoint("ks", module("ks", register_knowledge_sources=register_knowledge_sources)))
    assert "not a subclass of kdframe.knowledge.base.KnowledgeSource" in single(messages, "'ks'")
