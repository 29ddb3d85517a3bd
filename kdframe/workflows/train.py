"""Train one model on the data's own labels (a teacher, a control, or any single potential)."""

from __future__ import annotations

from typing import Literal

from ..config import Base
from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..student import Student
from .base import Run, Workflow


class TrainConfig(Base):
    workflow: Literal["train"]
    potential: Student


class Train(Workflow):
    name = "train"
    Config = TrainConfig
    streams_data = True

    def run(self, run: Run, until: str = "run") -> str:
        block = run.config.potential
        for label in ("forces", "stress"):
            if label in block.weights and label not in run.data.labels:
                raise ConfigError(f"potential.weights.{label}", f"the data has no {label}: set data.train.{label}")
        model = run.fit("potential", block, run.data, run.config.seed)
        return run.evaluate({"potential": model}, "Training")


@hookimpl
def register_workflows(register) -> None:
    register(Train())
