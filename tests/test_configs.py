"""Every shipped YAML run validates (architecture, hyperparameters, training and loss blocks)."""

from pathlib import Path

import pytest

from kdframe.config import deep_merge, load_yaml
from kdframe.errors import ConfigError
from kdframe.workflows.base import load_config

ROOT = Path(__file__).parent.parent
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p.name != "base.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT / "configs")) for p in CONFIGS])
def test_shipped_config_validates(path):
    try:
        workflow, config = load_config(path)
        workflow.check(config, str(path))
    except ConfigError as exc:  # runs that reuse another run's models or data name them; anything else is a bug
        assert "file not found" in str(exc) and "runs/" in str(exc), exc


def test_extends_merges_mappings_and_empty_mapping_clears(tmp_path):
    (tmp_path / "base.yaml").write_text("a: {x: 1, y: 2}\nb: {k: [1]}\nc: 3\n")
    (tmp_path / "run.yaml").write_text("extends: base.yaml\na: {y: 5}\nb: {}\n")
    assert load_yaml(tmp_path / "run.yaml") == {"a": {"x": 1, "y": 5}, "b": {}, "c": 3}
    assert deep_merge({"a": {"x": 1}}, {"a": 2}) == {"a": 2}
    model = {"architecture": "hippynn", "width": 32}  # another architecture's model block replaces, its keys would not fit
    assert deep_merge({"m": model}, {"m": {"architecture": "torchani", "hidden": [8]}}) == \
        {"m": {"architecture": "torchani", "hidden": [8]}}
    assert deep_merge({"m": model}, {"m": {"architecture": "hippynn", "width": 8}}) == {"m": {**model, "width": 8}}


def test_extends_replaces_an_epoch_schedule(tmp_path):
    """A schedule given again replaces the base's: merged, a shorter table's epochs would interleave with it."""
    (tmp_path / "base.yaml").write_text("w: {energy: 1, forces: {1: 10, 6: 9, 60: 0.5}}\n"
                                        "l: {forces: {type: linear, table: {1: 10, 60: 1}}}\n")
    (tmp_path / "run.yaml").write_text("extends: base.yaml\nw: {forces: {1: 10, 3: 9, 26: 0.5}}\n"
                                       "l: {forces: {table: {1: 5, 20: 1}}}\n")
    assert load_yaml(tmp_path / "run.yaml") == {"w": {"energy": 1, "forces": {1: 10, 3: 9, 26: 0.5}},
                                                "l": {"forces": {"type": "linear", "table": {1: 5, 20: 1}}}}
    assert deep_merge({"f": {1: 75, 100: 63}}, {"f": {"1": 75, "10": 63}}) == {"f": {"1": 75, "10": 63}}


def test_extends_loop_and_missing_base(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="extends itself in a loop"):
        load_yaml(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="c.yaml: extends: base file not found"):
        load_yaml(tmp_path / "c.yaml")
