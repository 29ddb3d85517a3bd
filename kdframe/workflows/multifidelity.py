"""Multi-fidelity learning (methods.md §3): one shared network, one output head per level of theory.

Each fidelity names its labels in the ``data.train`` file and its loss weights; the loss is
``sum_t (w_E,t L_E,t + w_F,t L_F,t)`` with head ``t`` predicting fidelity ``t``, and every
configuration missing a label is masked in that term (never counted as zero). Each head has
its own per-species reference energies, fitted on its own energies. The head named by
``evaluate_head`` is scored against ``data.train``'s energy/forces (test split) and the
``data.evaluate`` sets; every other head against its own labels on the test split.

Composition with EKD: a fidelity's forces may come from teachers instead of the file (``teacher:``, a
teacher source: trained here on that fidelity's energies, saved files of any architecture, or a
pretrained ensemble): their ensemble-averaged forces on every configuration are cached offline like
any teacher knowledge and trained as that fidelity's forces.

A fidelity's ``sources`` are further files labelled at that level (e.g. tens of thousands of xTB configurations
beside the CC data), trained into its head with their own loss weights and share of every batch; a
configuration is labelled at the levels its file has, never at the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic

from ..config import Base, Strict, invalid
from ..data.dataset import Dataset
from ..hookspecs import hookimpl
from ..potential import Ensemble, Potential
from ..schedule import make_schedule
from ..student import Model, Source, check_weights, shares_problem
from ..teacher import Teacher
from ..training import LossTerm
from ..training.trainer import without_later_defaults
from .base import Run, Scored, Workflow, compare_files, compared, knowledge_source
from .teachers import TeacherSource


class Fidelity(Strict):
    """One level of theory: keys in the ``data.train`` file (or teachers for its forces) and its loss weights."""

    energy: str
    forces: str | None = None
    teacher: TeacherSource | None = None  # teachers whose ensemble-averaged forces stand in for `forces` (EKD)
    weights: dict[str, Any] | None = None  # default: energy 1, forces 1 where the fidelity has forces
    sources: dict[str, Source] = {}  # more files labelled at this level, trained into its head

    @pydantic.model_validator(mode="before")
    @classmethod
    def _old_spelling(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "teacher_forces" in raw:
            raise ValueError("'teacher_forces' is now 'teacher' (a teacher block: {files: [...]}, {pretrained: NAME} "
                             "or {train: {...}})")
        return raw

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> "Fidelity":
        if self.forces and self.teacher:
            raise ValueError("give 'forces' (a key of the file) or 'teacher' (teachers' forces), not both")
        if self.weights is not None:
            if "forces" in self.weights and not self.has_forces:
                raise invalid(("weights", "forces"), "this fidelity has no forces: name their key as 'forces' or "
                              "give a 'teacher'")
        return self

    @pydantic.field_validator("weights")
    @classmethod
    def _known_terms(cls, weights: dict[str, Any] | None) -> dict[str, Any] | None:
        return weights if weights is None else check_weights(weights, {"energy": 0, "forces": 0})

    @property
    def has_forces(self) -> bool:
        return bool(self.forces or self.teacher)

    def terms(self, name: str, head: int) -> list[LossTerm]:
        """This fidelity's loss terms, routed to its head."""
        weights = self.weights if self.weights is not None else {"energy": 1.0, **({"forces": 1.0} if self.has_forces else {})}
        return [LossTerm(quantity, label(name, quantity), make_schedule(w, f"fidelities.{name}.weights.{quantity}"),
                         head) for quantity, w in weights.items()]


class MultiFidelityConfig(Base):
    workflow: Literal["multifidelity"]
    fidelities: dict[str, Fidelity] = pydantic.Field(min_length=1)
    evaluate_head: str  # the fidelity scored against data.train's energy/forces and data.evaluate
    potential: Model
    compare: dict[str, list[str]] = {}  # extra rows: name -> saved model files, scored on evaluate_head

    @pydantic.model_validator(mode="after")
    def _evaluated_head(self) -> "MultiFidelityConfig":
        if self.evaluate_head not in self.fidelities:
            raise ValueError(f"evaluate_head: {self.evaluate_head!r} is not a fidelity "
                             f"(valid: {', '.join(self.fidelities)})")
        seen: set[str] = set()
        for name, fidelity in self.fidelities.items():
            for source in fidelity.sources:
                if source in seen or source in self.fidelities:
                    raise invalid(("fidelities", name, "sources", source), "the name is taken by another source or "
                                  "a fidelity: give every source its own name")
                seen.add(source)
        shares = {f"fidelities.{fid}.sources.{name}.share": source.share
                  for fid, fidelity in self.fidelities.items() for name, source in fidelity.sources.items()}
        if problem := shares_problem(shares, "the run's data (data.train)"):
            raise invalid(("fidelities",), problem)
        return self

    def sources(self) -> dict[str, tuple[int, Source]]:
        """Every fidelity's sources by name, with the index of the head they train."""
        return {name: (head, source) for head, fidelity in enumerate(self.fidelities.values())
                for name, source in fidelity.sources.items()}


def fidelities_record(config: MultiFidelityConfig) -> dict[str, Any]:
    """The fidelities as a stage records them; without ``sources`` where there are none (as runs before they
    existed recorded them); the sources themselves are recorded with their contents by the stage."""
    return {name: without_later_defaults(fidelity, {"sources": ({},)})
            for name, fidelity in config.model_dump()["fidelities"].items()}


def label(fidelity: str, quantity: str) -> str:
    """The dataset label holding one fidelity's energies or forces."""
    return f"{fidelity}.{quantity}"


def fidelity_terms(config: MultiFidelityConfig) -> list[LossTerm]:
    """Every fidelity's loss terms routed to its head; the evaluated head's energy first (it is monitored)."""
    order = sorted(config.fidelities, key=lambda name: name != config.evaluate_head)
    return [term for name in order
            for term in config.fidelities[name].terms(name, list(config.fidelities).index(name))]


class MultiFidelity(Workflow):
    name = "multifidelity"
    Config = MultiFidelityConfig

    def data_keys(self, config: MultiFidelityConfig) -> dict[str, str]:
        keys = dict(config.data.train.keys())
        for name, fidelity in config.fidelities.items():
            keys[label(name, "energy")] = fidelity.energy
            if fidelity.forces:
                keys[label(name, "forces")] = fidelity.forces
        return keys

    def check(self, config: MultiFidelityConfig, source: str) -> None:
        for name in config.compare:
            compare_files(config.compare, name, Path(source).parent)

    def run(self, run: Run, until: str = "run") -> str:
        config: MultiFidelityConfig = run.config
        heads = list(config.fidelities)
        data, teachers = self.teacher_forces(run, config)
        if until == "train" and teachers:
            return f"Teachers of fidelities {', '.join(teachers)} ready; their forces cached in {run.dir / 'knowledge'}"
        sources = config.sources()
        model = run.fit("potential", config.potential, data, config.seed, terms=fidelity_terms(config),
                        identity={"fidelities": fidelities_record(config), "teachers": teachers},
                        heads=heads, energy_labels=[label(h, "energy") for h in heads],
                        sources={name: source for name, (_, source) in sources.items()},
                        source_heads={name: head for name, (head, _) in sources.items()})
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
        """run.data with each taught fidelity's ensemble-averaged forces; the teachers' fingerprints."""
        data, fingerprints = run.data, {}
        for i, (name, fidelity) in enumerate(config.fidelities.items()):
            if fidelity.teacher is None:
                continue
            energy = label(name, "energy")
            ensemble = fidelity.teacher.ensemble(run, f"fidelities.{name}.teacher", f"teacher_{name}",
                                                 config.seed + 1 + 10 * i, energy, rename={"energy": energy})
            teacher = Teacher(ensemble, f"{name} teachers")
            forces = run.knowledge(knowledge_source("ensemble_forces", label(name, "forces")), teacher, run.data)
            data, fingerprints[name] = data.with_labels(**{label(name, "forces"): forces}), teacher.fingerprint()
        return data, fingerprints


@hookimpl
def register_workflows(register) -> None:
    register(MultiFidelity())
