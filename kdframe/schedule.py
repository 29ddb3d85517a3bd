"""Loss weights as functions of the epoch (1-based, as in methods.md tables).

YAML forms: a number (constant); a mapping ``{epoch: value}`` (piecewise constant:
the value of the largest listed epoch <= the current one); or
``{type: linear, table: {epoch: value}}`` (piecewise linear, constant past the ends).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from typing import Any, Protocol

from .errors import ConfigError
from .hookspecs import hookimpl
from .plugins import registry


class Schedule(Protocol):
    def __call__(self, epoch: int) -> float: ...


def _weight(value: Any, where: str) -> float:
    """A loss weight: a finite number >= 0 (a negative weight would maximise its error)."""
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ConfigError(where, f"weight {value} is not a finite number >= 0")
    return value


class Constant:
    def __init__(self, value: float, where: str = "weight"):
        self.value = _weight(value, where)
        self.values = [self.value]

    def __call__(self, epoch: int) -> float:
        return self.value


class _Table:
    def __init__(self, table: Mapping[int, float], where: str):
        if not table:
            raise ConfigError(where, "schedule table is empty", "a mapping {epoch: weight}")
        try:
            items = sorted((int(k), float(v)) for k, v in table.items())
        except (TypeError, ValueError):
            raise ConfigError(where, f"schedule table {dict(table)!r} is not {{epoch: number}}", "integer epochs, numeric weights") from None
        if items[0][0] != 1:  # what epochs before the first listed one get would otherwise be a guess
            raise ConfigError(where, f"schedule epochs start at 1, got {items[0][0]}", "a table whose first epoch is 1")
        self.epochs = [e for e, _ in items]
        self.values = [_weight(v, f"{where}.{e}") for e, v in items]


class PiecewiseConstant(_Table):
    def __call__(self, epoch: int) -> float:
        i = bisect.bisect_right(self.epochs, epoch) - 1
        return self.values[max(i, 0)]


class PiecewiseLinear(_Table):
    def __call__(self, epoch: int) -> float:
        i = bisect.bisect_right(self.epochs, epoch)
        if i == 0:
            return self.values[0]
        if i == len(self.epochs):
            return self.values[-1]
        e0, e1, v0, v1 = self.epochs[i - 1], self.epochs[i], self.values[i - 1], self.values[i]
        return v0 + (v1 - v0) * (epoch - e0) / (e1 - e0)


def make_schedule(spec: Any, where: str) -> Schedule:
    """Build a schedule from its YAML form (see module docstring)."""
    if isinstance(spec, bool):
        raise ConfigError(where, f"{spec!r} is not a weight", "a number, {epoch: weight} or {type: NAME, table: ...}")
    if isinstance(spec, (int, float)):
        return Constant(spec, where)
    if isinstance(spec, Mapping) and "type" in spec:
        kind = registry().lookup("schedules", str(spec["type"]), f"{where}.type")
        extra = set(spec) - {"type", "table"}
        if extra:
            raise ConfigError(f"{where}.{sorted(extra)[0]}", "unknown key", ["type", "table"])
        return kind(spec.get("table", {}), f"{where}.table")
    if isinstance(spec, Mapping):
        return PiecewiseConstant(spec, where)
    raise ConfigError(where, f"{spec!r} is not a weight", "a number, {epoch: weight} or {type: NAME, table: ...}")


@hookimpl
def register_schedules(register) -> None:
    register("constant", lambda table, where: PiecewiseConstant(table, where))
    register("linear", PiecewiseLinear)
