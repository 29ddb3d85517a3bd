"""The KnowledgeSource interface.

A source turns a teacher's predictions for a batch into labels. *Offline* sources
are computed once for the whole dataset and cached (see :mod:`.cache`); *online*
sources are computed by the trainer at every step (e.g. fresh random probes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import pydantic
import torch

from ..batch import Batch
from ..teacher import Teacher


class NoSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class KnowledgeSource(ABC):
    name: ClassVar[str]
    offline: ClassVar[bool] = True
    Settings: ClassVar[type[pydantic.BaseModel]] = NoSettings

    def __init__(self, label: str, settings: dict[str, Any] | None = None):
        self.label = label
        self.settings = self.Settings.model_validate(settings or {})

    @abstractmethod
    def compute(self, teacher: Teacher, batch: Batch) -> torch.Tensor:
        """The label for this batch: (n_conf, ...) or (n_atoms, ...)."""

    def describe(self) -> dict[str, Any]:
        """What identifies this source's output, for cache keys."""
        return {"source": self.name, "label": self.label, **self.settings.model_dump()}
