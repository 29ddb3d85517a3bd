"""Training: loss terms and the loop."""

from .loss import LossTerm
from .trainer import TrainSettings, Trainer

__all__ = ["LossTerm", "TrainSettings", "Trainer"]
