"""Train one model on the data's own labels (a teacher, a control, or any single potential)."""

from __future__ import annotations

from typing import Any, Literal

from ..config import Base, ModelSpec, Strict
from ..errors import ConfigError
from ..hookspecs import hookimpl
from .base import Run, Workflow, loss_terms, settings

LABELS = {"energy": ("energy", "energy"), "forces": ("forces", "forces"), "stress": ("stress", "stress")}


class ModelBlock(Strict):
    model: ModelSpec
    training: dict[str, Any] = {}
    weights: dict[str, Any] = {"energy": 1.0}


class TrainConfig(Base):
    workflow: Literal["train"]
    potential: ModelBlock


class Train(Workflow):
    name = "train"
    Config = TrainConfig
    streams_data = True

    def model_specs(self, config: TrainConfig) -> dict[str, ModelSpec]:
        return {"potential.model": config.potential.model}

    def training_blocks(self, config: TrainConfig) -> dict[str, dict[str, Any]]:
        return {"potential.training": config.potential.training}

    def weight_blocks(self, config: TrainConfig):
        return {"potential.weights": (config.potential.weights, LABELS)}

    def run(self, run: Run, until: str = "run") -> str:
        block = run.config.potential
        for label in ("forces", "stress"):
            if label in block.weights and label not in run.data.labels:
                raise ConfigError(f"potential.weights.{label}", f"the data has no {label}: set data.train.{label}")
        model = run.train("potential", block.model, loss_terms(block.weights, LABELS, "potential.weights"),
                          settings(run.config, block.training, "potential.training"), run.data,
                          run.splits["train"], run.splits["valid"], run.config.seed, {"weights": block.weights})
        return run.evaluate({"potential": model}, "Training")


@hookimpl
def register_workflows(register) -> None:
    register(Train())
