"""The Student block: one model to train, its training overrides and its loss weights.

Every model a run trains is one: EKD students and controls, teachers trained here, atomic-energy
students, Born-Again models, Hessian variants, multi-fidelity potentials. The block is validated
when the YAML is read (architecture and hyperparameters through the plugin registry, training
overrides against :class:`~kdframe.training.TrainSettings`, loss weights against the terms its role
may name), so a mistake is reported before any work, with its YAML path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional

import pydantic

from .config import ModelSpec, Strict, invalid, resolve_path
from .errors import ConfigError
from .probes import ProbeSettings
from .schedule import make_schedule
from .training import LossTerm
from .training.trainer import TrainSettings, without_later_defaults

# Weight name -> (predicted quantity, dataset label[, probe label]) for models trained on the data's own labels.
TRUE_LABELS: Mapping[str, tuple[str, ...]] = {"energy": ("energy", "energy"), "forces": ("forces", "forces"),
                                              "stress": ("stress", "stress")}


def _all_optional(settings: type[pydantic.BaseModel]) -> type[pydantic.BaseModel]:
    """``settings`` with every field optional (None: not overridden), keeping each field's constraints.

    Generated rather than written out so that a new training setting is overridable at once.
    """
    fields: dict[str, Any] = {}
    for name, field in settings.model_fields.items():
        annotation = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        fields[name] = (Optional[annotation], None)
    class Overrides(Strict):
        model_config = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False)

        @pydantic.model_serializer(mode="wrap")
        def _as_before(self, handler: Any) -> dict:  # identities of runs made before a setting existed still match
            return without_later_defaults(handler(self))

    return pydantic.create_model("TrainingOverrides", __base__=Overrides, **fields)


TrainingOverrides = _all_optional(TrainSettings)


class Model(Strict):
    """A model spec and its overrides of the run's top-level ``training`` block."""

    model: ModelSpec
    training: TrainingOverrides = TrainingOverrides()  # type: ignore[valid-type]

    def settings(self, base: TrainSettings) -> TrainSettings:
        """The run's training settings with this block's overrides."""
        return TrainSettings.model_validate({**base.model_dump(), **self.training.model_dump(exclude_none=True)})


SOURCE_QUANTITIES = ("energy", "forces", "atom_energies", "hvp")  # what a source's file can label
PROBE = "hvp:probe"  # a source's hvp probes, as label SOURCE.hvp:probe
SPREAD = "spread"  # a confidence-weighted source's spread, as label SOURCE.spread
SPREADS = ("teacher.forces_std", "teacher.energy_std")  # per-configuration spreads teacher labelling writes


def shares_problem(shares: Mapping[str, float], rest: str) -> str | None:
    """Why sources with these shares of every batch (by YAML path) leave none of it to ``rest``; None when they
    leave some."""
    total = sum(shares.values())
    if total < 1:
        return None
    return (" + ".join(f"{path} {share:g}" for path, share in shares.items())
            + f" = {total:g}: leave some of every batch to {rest}")


class Confidence(Strict):
    """Weight each configuration of a teacher-labelled source by the teachers' agreement on it: ``w = 1 / (1 +
    (spread / scale)^2)`` (1 where the spread is missing), normalised to mean 1 over each batch's labelled entries of
    the source, so the source keeps its loss weight and configurations the ensemble disagrees on teach less than the
    others (:meth:`kdframe.training.LossTerm.weighted`). Validation errors stay unweighted."""

    key: str = SPREADS[0]  # per-configuration spread in the file (eV/Å or eV, as read: Hartree files are converted)
    scale: float = pydantic.Field(gt=0, allow_inf_nan=False)  # spread at which w = 1/2, in the same units

    @pydantic.field_validator("scale", mode="before")
    @classmethod
    def _a_number(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"{value} is not a number (valid: a spread > 0, e.g. 0.5 eV/Å)")
        return value


class Source(Strict):
    """Labelled configurations from another file (e.g. teacher-labelled by ``kdframe data teacher-label``),
    trained on beside the run's data with their own loss weights and a fixed share of every batch.

    Their energies must be on the run's energy scale (``teacher-label --align-to`` the run's data).
    """

    path: str  # ANI-layout HDF5, extxyz or a packed file (streamed from disk)
    # "file": its own labels (the keys below); "teachers": the run's (aligned) teachers label it first (EKD's student,
    # the atomic workflow's students and Born-Again), into a packed file in run_dir/knowledge, resumable, so unlabelled
    # configurations (kdframe data generate) will do.
    labelled_by: Literal["file", "teachers"] = "file"
    energy: str | None = None  # keys in that file
    forces: str | None = None
    atom_energies: str | None = None  # one energy per atom, e.g. teacher.atom_energies (teacher-label --atom-energies)
    hvp: str | None = None  # H·v (eV/Å²) along the probes in key hvp_probe, e.g. teacher.hvp (teacher-label --hvp)
    hvp_probe: str | None = None
    # The probes of an hvp term the teachers label: one fixed probe per configuration (default: Rademacher, seed 0).
    probes: ProbeSettings | None = None
    units: Literal["auto", "hartree", "ev"] = "auto"
    weights: dict[str, Any] = {"energy": 1.0, "forces": 1.0}
    share: float = pydantic.Field(gt=0, lt=1)  # fraction of every training batch drawn from this file
    valid_fraction: float = pydantic.Field(0.05, ge=0, lt=1)  # held out for validation (reported, not monitored)
    # Only this many of the file's configurations, a random subset fixed by the run's seed; subsets of one file
    # are nested (a smaller limit takes the first ones of the same draw), e.g. for learning curves.
    limit: int | None = pydantic.Field(None, ge=2)
    confidence: Confidence | None = None  # weight configurations by the teachers' spread (training loss only)

    @pydantic.field_validator("weights")
    @classmethod
    def _known_terms(cls, weights: dict[str, Any]) -> dict[str, Any]:
        return check_weights(weights, {quantity: 0 for quantity in SOURCE_QUANTITIES})

    @pydantic.model_validator(mode="after")
    def _usable(self, info: pydantic.ValidationInfo) -> "Source":
        if self.labelled_by == "teachers":
            given = [k for k in (*SOURCE_QUANTITIES, "hvp_probe") if getattr(self, k) is not None]
            if given:
                raise invalid((given[0],), "the teachers label this source (labelled_by: teachers): drop the key")
            if self.confidence and self.confidence.key not in SPREADS:
                raise invalid(("confidence", "key"), f"the teachers' labels hold no {self.confidence.key!r} "
                              f"(valid: {', '.join(SPREADS)})")
        for name in self.weights:
            if self.labelled_by == "file" and getattr(self, name) is None:
                raise invalid(("weights", name), f"this source has no {name}: name their key as '{name}'")
        if self.hvp_probe is not None and self.hvp is None and self.labelled_by == "file":
            raise invalid(("hvp_probe",), "probes without H·v: name the hvp key too, or drop this one")
        if self.labelled_by == "file" and self.hvp is not None and self.hvp_probe is None:
            raise invalid(("hvp_probe",), "name the key of the probes the hvp key was taken along (e.g. "
                          "teacher.hvp_probe)")
        if self.probes is not None and (self.labelled_by == "file" or "hvp" not in self.weights):
            raise invalid(("probes",), "probes are for an hvp term the teachers label (labelled_by: teachers, "
                          "weights.hvp): drop the key")
        if self.probes is not None and self.probes.regime != "fixed":
            raise invalid(("probes", "regime"), "the teachers label one fixed probe per configuration ahead of "
                          "training (valid: fixed)")
        config_dir = (info.context or {}).get("config_dir", Path.cwd())
        if not resolve_path(self.path, config_dir).is_file():
            raise invalid(("path",), f"file not found: {self.path} (relative paths are relative to the YAML file)")
        return self

    def keys(self) -> dict[str, str]:
        """Label name -> key in the file for the quantities this source trains on (and its spread, if weighted)."""
        keys = {quantity: getattr(self, quantity) for quantity in self.weights}
        keys |= {PROBE: self.hvp_probe} if "hvp" in self.weights else {}
        return keys | ({SPREAD: self.confidence.key} if self.confidence else {})

    @pydantic.model_serializer(mode="wrap")
    def _as_before(self, handler: Any) -> dict:  # records of runs made before these settings existed still match
        return without_later_defaults(handler(self), {"atom_energies": (), "confidence": (), "hvp": (),
                                                      "hvp_probe": (), "probes": ()})


def source_terms(sources: Mapping[str, Source], heads: Mapping[str, int] | None = None) -> list[LossTerm]:
    """The loss terms of every source, on labels named ``SOURCE.QUANTITY``, each routed to its head in ``heads``
    (default: the first)."""
    heads = heads or {}
    return [LossTerm(quantity, f"{name}.{quantity}", make_schedule(weight, f"sources.{name}.weights.{quantity}"),
                     heads.get(name, 0), probe=f"{name}.{PROBE}" if quantity == "hvp" else None,
                     confidence=(f"{name}.{SPREAD}", source.confidence.scale)
                     if source.confidence and quantity != "hvp" else None)  # a curvature term is not weighted
            for name, source in sources.items() for quantity, weight in source.weights.items()]


class Student(Model):
    """A model trained on loss terms; subclasses name the terms their role may use (``LABELS``)."""

    LABELS: ClassVar[Mapping[str, tuple[str, ...]]] = TRUE_LABELS
    FIRST: ClassVar[tuple[str, ...]] = ()  # terms put first, in this order (the first term is monitored)
    weights: dict[str, Any] = {"energy": 1.0}
    # More training data by name, each with its loss weights and share of every batch (the run's data gets the rest).
    sources: dict[str, Source] = {}
    # The loss term whose validation RMSE picks the model kept, lowers the learning rate and stops training: a name
    # in `weights` or a source's SOURCE.QUANTITY (e.g. sampled.energy). Default: the first term (the run's energies).
    monitor: str | None = None

    _shares = pydantic.field_validator("sources")(lambda sources: checked_shares(sources))

    @pydantic.field_validator("weights")
    @classmethod
    def _known_terms(cls, weights: dict[str, Any]) -> dict[str, Any]:
        return check_weights(weights, cls.LABELS)

    @pydantic.model_validator(mode="after")
    def _monitor_is_a_term(self) -> "Student":
        if self.monitor is None:
            return self
        valid = [*self.weights, *(term.label for term in source_terms(self.sources))]
        if self.monitor not in valid:
            raise invalid(("monitor",), f"{self.monitor!r} is not a loss term of this block "
                          f"(valid: {', '.join(valid)})")
        source = self.sources.get(self.monitor.rpartition(".")[0])
        if source is not None and not source.valid_fraction:
            raise invalid(("monitor",), f"{self.monitor!r}: that source holds no configurations out for validation "
                          "(valid_fraction: 0); give it a valid_fraction > 0 or monitor another term")
        return self

    def _names(self) -> list[str]:
        """The names in ``weights``, in the order of :meth:`terms`."""
        return sorted(self.weights, key=lambda n: self.FIRST.index(n) if n in self.FIRST else len(self.FIRST))

    def terms(self, rename: Mapping[str, str] | None = None) -> list[LossTerm]:
        """The loss terms of ``weights``; ``rename`` maps a dataset label to the one to use instead."""
        rename = rename or {}
        terms = []
        for name in self._names():
            quantity, label, *probe = self.LABELS[name]
            terms.append(LossTerm(quantity, rename.get(label, label), make_schedule(self.weights[name], name),
                                  probe=next(iter(probe), None)))
        return terms

    def monitored(self, terms: Sequence[LossTerm]) -> LossTerm | None:
        """The term ``monitor`` names among ``terms`` (this block's own in :meth:`terms` order, then its sources');
        None when unset (the trainer monitors the first)."""
        if self.monitor is None:
            return None
        if self.monitor in self.weights:
            return terms[self._names().index(self.monitor)]
        found = [term for term in terms if term.label == self.monitor]
        if not found:
            raise ConfigError("monitor", f"{self.monitor!r} is not among this stage's loss terms (valid: "
                              f"{', '.join(self.weights)}, {', '.join(t.label for t in terms if '.' in t.label)})")
        return found[0]

    def with_weights(self, weights: dict[str, Any]) -> "Student":
        """The same model and training on the run's data alone, with other loss weights (a control of its size)."""
        monitor = self.monitor if self.monitor in weights else None
        return self.model_copy(update={"weights": weights, "sources": {}, "monitor": monitor})


class Sweep(Strict):
    """A Student block with ``models`` (a size sweep) instead of ``model``; ``STUDENT`` is the students' class."""

    STUDENT: ClassVar[type[Student]] = Student
    models: list[ModelSpec] = pydantic.Field(min_length=1)
    training: TrainingOverrides = TrainingOverrides()  # type: ignore[valid-type]
    weights: dict[str, Any] = {"energy": 1.0}
    sources: dict[str, Source] = {}  # more training data for every student (as Student.sources)
    _shares = pydantic.field_validator("sources")(lambda sources: checked_shares(sources))

    @pydantic.field_validator("weights")
    @classmethod
    def _known_terms(cls, weights: dict[str, Any]) -> dict[str, Any]:
        return check_weights(weights, cls.STUDENT.LABELS)

    def students(self) -> list[Student]:
        return [self.STUDENT(model=spec, training=self.training, weights=self.weights).model_copy(
            update={"sources": self.sources}) for spec in self.models]  # sources checked already, with their paths


def checked_shares(sources: dict[str, Source]) -> dict[str, Source]:
    """``sources`` whose shares leave some of every batch to the run's data (ValueError otherwise)."""
    shares = {f"{name}.share": source.share for name, source in sources.items()}
    if problem := shares_problem(shares, "the run's data (data.train)"):
        raise ValueError(problem)
    return sources


def check_weights(weights: dict[str, Any], labels: Mapping[str, Any]) -> dict[str, Any]:
    """A ``weights`` block names known terms, at least one, each a valid schedule (ValueError otherwise)."""
    if not weights:
        raise ValueError(f"no loss terms (valid: {', '.join(labels)})")
    schedules = []
    for name, spec in weights.items():
        if name not in labels:
            raise invalid((name,), f"unknown loss term (valid: {', '.join(labels)})", spec)
        try:
            schedules.append(make_schedule(spec, name))
        except ConfigError as exc:
            loc = tuple(int(p) if p.isdigit() else p for p in exc.where.split("."))
            raise invalid(loc, str(exc).removeprefix(f"{exc.where}: "), spec) from None
    if all(not any(getattr(s, "values", [1])) for s in schedules):  # plugin schedules may not list values
        raise ValueError("every loss weight is zero: the model would learn nothing")
    return weights
