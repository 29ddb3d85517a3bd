"""Multi-fidelity learning (methods.md §3): one shared network, one output head per level of theory.

Each fidelity names its labels in the ``data.train`` file and its loss weights; the loss is
``sum_t (w_E,t L_E,t + w_F,t L_F,t)`` with head ``t`` predicting fidelity ``t``, and every
configuration missing a label is masked in that term (never counted as zero). Each head has
its own per-species reference energies, fitted on its own energies. The head named by
``evaluate_head`` is scored against ``data.train``'s energy/forces (test split) and the
``data.evaluate`` sets; every other head against its own labels on the test split.

Composition with EKD: a fidelity's forces may come from a teacher ensemble instead of the file
(``teacher_forces: [model files]``): its ensemble-averaged forces on every configuration are cached
offline like any teacher knowledge and trained as that fidelity's forces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic
import torch

from ..config import Base, ModelSpec, Strict
from ..errors import ConfigError
from ..data.dataset import Dataset
from ..hookspecs import hookimpl
from ..knowledge.ensemble import EnsembleForces
from ..potential import Ensemble, Potential
from ..teacher import Teacher
from ..training import LossTerm
from .base import Run, Scored, Workflow, compare_files, compared, loss_terms, settings


class Fidelity(Strict):
    """One level of theory: keys in the ``data.train`` file and its loss weights."""

    energy: str
    forces: str | None = None
    teacher_forces: list[str] = []  # saved models whose ensemble-averaged forces stand in for `forces` (EKD)
    weights: dict[str, Any] | None = None  # default: energy 1, forces 1 where the fidelity has forces

    @pydantic.model_validator(mode="after")
    def _one_force_source(self) -> "Fidelity":
        if self.forces and self.teacher_forces:
            raise ValueError("give 'forces' (a key of the file) or 'teacher_forces' (model files), not both")
        return self

    @property
    def has_forces(self) -> bool:
        return bool(self.forces or self.teacher_forces)

    def labels(self, name: str) -> dict[str, tuple[str, str]]:
        """Loss-term name -> (quantity, dataset label) for this fidelity."""
        own = {"energy": ("energy", label(name, "energy"))}
        return {**own, "forces": ("forces", label(name, "forces"))} if self.has_forces else own

    def weight_block(self) -> dict[str, Any]:
        return self.weights if self.weights is not None else {"energy": 1.0, **({"forces": 1.0} if self.has_forces else {})}


class PotentialBlock(Strict):
    model: ModelSpec
    training: dict[str, Any] = {}


class MultiFidelityConfig(Base):
    workflow: Literal["multifidelity"]
    fidelities: dict[str, Fidelity] = pydantic.Field(min_length=1)
    evaluate_head: str  # the fidelity scored against data.train's energy/forces and data.evaluate
    potential: PotentialBlock
    compare: dict[str, list[str]] = {}  # extra rows: name -> saved model files, scored on evaluate_head


def label(fidelity: str, quantity: str) -> str:
    """The dataset label holding one fidelity's energies or forces."""
    return f"{fidelity}.{quantity}"


def fidelity_terms(config: MultiFidelityConfig) -> list[LossTerm]:
    """Every fidelity's loss terms routed to its head; the evaluated head's energy first (it is monitored)."""
    order = sorted(config.fidelities, key=lambda name: name != config.evaluate_head)
    terms = []
    for name in order:
        fidelity = config.fidelities[name]
        for term in loss_terms(fidelity.weight_block(), fidelity.labels(name), f"fidelities.{name}.weights"):
            term.head = list(config.fidelities).index(name)
            terms.append(term)
    return terms


class MultiFidelity(Workflow):
    name = "multifidelity"
    Config = MultiFidelityConfig

    def model_specs(self, config: MultiFidelityConfig) -> dict[str, ModelSpec]:
        return {"potential.model": config.potential.model}

    def training_blocks(self, config: MultiFidelityConfig) -> dict[str, dict[str, Any]]:
        return {"potential.training": config.potential.training}

    def weight_blocks(self, config: MultiFidelityConfig):
        return {f"fidelities.{name}.weights": (f.weight_block(), f.labels(name)) for name, f in config.fidelities.items()}

    def data_keys(self, config: MultiFidelityConfig) -> dict[str, str]:
        keys = dict(config.data.train.keys())
        for name, fidelity in config.fidelities.items():
            keys[label(name, "energy")] = fidelity.energy
            if fidelity.forces:
                keys[label(name, "forces")] = fidelity.forces
        return keys

    def check(self, config: MultiFidelityConfig, source: str) -> None:
        if config.evaluate_head not in config.fidelities:
            raise ConfigError(f"{source}: evaluate_head", f"{config.evaluate_head!r} is not a fidelity", config.fidelities)
        for name, fidelity in config.fidelities.items():
            if fidelity.weights == {}:
                raise ConfigError(f"{source}: fidelities.{name}.weights", "no loss terms (null: the default weights)",
                                  fidelity.labels(name))
            if fidelity.weights is not None and "forces" in fidelity.weights and not fidelity.has_forces:
                raise ConfigError(f"{source}: fidelities.{name}.weights.forces",
                                  f"this fidelity has no forces: set fidelities.{name}.forces to a key of the file "
                                  f"or fidelities.{name}.teacher_forces to model files")
            if fidelity.teacher_forces:
                compare_files({f"fidelities.{name}.teacher_forces": fidelity.teacher_forces},
                              f"fidelities.{name}.teacher_forces", Path(source).parent)
        super().check(config, source)
        for name in config.compare:
            compare_files(config.compare, name, Path(source).parent)

    def run(self, run: Run, until: str = "run") -> str:
        config: MultiFidelityConfig = run.config
        heads = list(config.fidelities)
        block = config.potential
        data, teachers = self.teacher_forces(run, config)
        model = run.train("potential", block.model, fidelity_terms(config),
                          settings(config, block.training, "potential.training"), data, run.splits["train"],
                          run.splits["valid"], config.seed,
                          {"fidelities": config.model_dump()["fidelities"], "teachers": teachers},
                          heads=heads, energy_labels=[label(h, "energy") for h in heads])
        rows: dict[str, Potential | Ensemble | Scored] = {"potential": Scored(model, config.evaluate_head)}
        for head in heads:
            if head != config.evaluate_head:
                forces = label(head, "forces") if config.fidelities[head].forces else None  # not teacher forces
                rows[f"potential [{head}]"] = Scored(model, head, label(head, "energy"), forces)
        for name, other in compared(config.compare, run.config_dir, run.device).items():
            rows[name] = Scored(other, config.evaluate_head if config.evaluate_head in other.heads else None)
        note = (f"Heads: {', '.join(heads)}. Row `potential` is head {config.evaluate_head!r} against data.train's "
                "labels; `potential [h]` is head h against fidelity h's own labels (test split).")
        return run.evaluate(rows, f"Multi-fidelity learning ({', '.join(heads)})", note)

    @staticmethod
    def teacher_forces(run: Run, config: MultiFidelityConfig) -> tuple[Dataset, dict[str, str]]:
        """run.data with each ``teacher_forces`` fidelity's ensemble-averaged forces; teacher fingerprints."""
        data, fingerprints = run.data, {}
        for name, fidelity in config.fidelities.items():
            if not fidelity.teacher_forces:
                continue
            where = f"fidelities.{name}.teacher_forces"
            members = [Potential.load(p).to(run.device) for p in compare_files({where: fidelity.teacher_forces}, where,
                                                                                run.config_dir)]
            for member in members:
                member.check_species(torch.as_tensor(run.species), where)
            teacher = Teacher(Ensemble(members), f"{name} teachers")
            forces = run.knowledge(EnsembleForces(label(name, "forces")), teacher, run.data)
            data, fingerprints[name] = data.with_labels(**{label(name, "forces"): forces}), teacher.fingerprint()
        return data, fingerprints


@hookimpl
def register_workflows(register) -> None:
    register(MultiFidelity())
