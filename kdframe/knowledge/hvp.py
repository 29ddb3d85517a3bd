"""Teacher Hessian-vector products as knowledge (methods.md §4): the cheap form of Hessian distillation.

Offline, each configuration's probe is its fixed one (:func:`kdframe.probes.fixed_probes`), so
the reference H·v is cached like any offline knowledge and the probe settings are part of the
cache key. For an ensemble teacher H·v is that of the mean energy. Online (fresh probes), the
source takes H·v along the probes the trainer put in the batch under :attr:`TeacherHVP.probe_label`.
"""

from __future__ import annotations

import numpy as np
import pydantic
import torch

from ..batch import Batch
from ..data.dataset import Dataset
from ..hookspecs import hookimpl
from ..potential import model_dtype
from ..probes import ProbeSettings, batch_probes, fixed_probes
from ..teacher import Teacher
from .base import KnowledgeSource


class HVPSettings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    head: int = 0
    probes: ProbeSettings = ProbeSettings()


class TeacherHVP(KnowledgeSource):
    name = "teacher_hvp"
    Settings = HVPSettings

    @property
    def probe_label(self) -> str:
        return f"{self.label}:probe"

    def compute(self, teacher: Teacher, batch: Batch) -> torch.Tensor:
        probes = batch.labels.get(self.probe_label)
        if probes is None:
            if self.settings.probes.regime == "fresh":
                raise ValueError(f"{self.name}: fresh probes are drawn by the trainer; use this source online with "
                                 f"Trainer(probes={{{self.probe_label!r}: ...}})")
            probes = batch_probes(batch, self.settings.probes)
        batch = batch.to(batch.positions.device, model_dtype(teacher.model))  # online: the student's dtype
        return teacher.hessian_vector_product(batch, probes.to(batch.positions.dtype), self.settings.head)

    def with_labels(self, dataset: Dataset, value: np.ndarray) -> Dataset:
        """``dataset`` with the offline HVPs ``value`` and the fixed probes they were taken along."""
        return dataset.with_labels(**{self.label: value, self.probe_label: fixed_probes(dataset, self.settings.probes)})


@hookimpl
def register_knowledge_sources(register) -> None:
    register(TeacherHVP)
