"""What every workflow shares: the run directory, data, splits, reference energies, staged training, reports."""

from __future__ import annotations

import glob
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pydantic
import torch

from .. import distributed
from ..config import Base, DataFile, ModelSpec, resolve_path, validate
from ..data.dataset import PER_ATOM, PER_CONF, Dataset
from ..data.mixture import Mixture
from ..data.packed import PackedDataset
from ..data.readers import read_dataset
from ..data.reference import fit_reference_energies
from ..data.splits import split
from ..errors import ConfigError, DataError, RunStateError, WriteError
from ..evaluation import Metrics, evaluate
from ..io import atomic_write_text, file_sha256, lock_directory, note, unlock_directory, warn
from ..knowledge import KnowledgeSource, offline_knowledge
from ..plugins import registry
from ..potential import Ensemble, Potential
from ..probes import ProbeSettings
from ..report import table, write_report
from ..student import PROBE, SPREAD, SPREADS, Model, Source, Student, Sweep, source_terms
from ..teacher import Teacher
from ..training import LossTerm, Trainer
from ..training.trainer import CHECKPOINT, PREVIOUS

MODEL_FILE, STAGE_FILE = "model.pt", "stage.json"


class Workflow(ABC):
    """A named composition; ``Config`` extends :class:`~kdframe.config.Base` with its own sections."""

    name: ClassVar[str]
    Config: ClassVar[type[Base]]
    stages: ClassVar[tuple[str, ...]] = ("train", "label", "run")  # what `kdframe train/label/run` stop after
    streams_data: ClassVar[bool] = False  # trains from a packed (larger than memory) data.train file
    # YAML blocks whose ``sources`` the run's teachers label (``labelled_by: teachers``), e.g. ("student.sources",)
    labelled_sources_at: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def run(self, run: "Run", until: str = "run") -> str:
        """Do the work up to stage ``until``; return the text to print (a table)."""

    def data_keys(self, config: Base) -> dict[str, str]:
        """Label name -> key in the ``data.train`` file; a workflow training on more labels adds them here."""
        return config.data.train.keys()

    def check(self, config: Base, source: str) -> None:
        """Checks across blocks that the config's own validation cannot make; before any work."""


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def device_for(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda requested but torch sees no GPU", ["auto", "cpu"])
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


class Run:
    """One run directory: data loaded and split once, models trained as resumable stages.

    Setting up checks the whole config and reads the data; nothing is written then (not even the run directory).
    The first stage, knowledge file or report takes ``run_dir/.lock`` (a second process on the same run_dir gets
    one error naming the PID holding it); :meth:`close` (or ``with Run(...) as run``) gives it back.
    """

    def __init__(self, config: Base, config_path: Path, workflow: Workflow, progress: bool = True):
        self.config, self.workflow, self.progress = config, workflow, progress
        self.config_dir = config_path.parent
        self._locked = False
        if not config.run_dir.strip():
            raise ConfigError("run_dir", "empty; give the folder for this run's models and report (made if missing), "
                              "e.g. runs/my_run")
        self.dir = resolve_path(config.run_dir, Path.cwd())
        if self.dir.is_symlink() and not self.dir.exists():
            raise ConfigError("run_dir", f"{self.dir} is a symlink to nothing (a loop, or its target is gone); "
                              "give a directory (made if missing)")
        if self.dir.exists() and not self.dir.is_dir():
            raise ConfigError("run_dir", f"{self.dir} is a file; give a directory (made if missing)")
        self.device = device_for(config.device)
        workflow.check(config, str(config_path))
        check_regularisers(config)
        self.data = self.read(config.data.train, "data.train", workflow.data_keys(config))
        if isinstance(self.data, PackedDataset) and not workflow.streams_data:
            streaming = sorted(w.name for w in registry().workflows.values() if w.streams_data)
            raise ConfigError("data.train.path", f"{config.data.train.path} is a packed file, streamed from disk; workflow "
                              f"{workflow.name!r} holds teacher knowledge in memory and needs the ANI-layout file "
                              f"(workflows that stream packed files: {', '.join(streaming)})")
        fractions, split_seed = config.data.split.fractions, config.data.split.seed
        self.splits = split(self.data, fractions, config.seed if split_seed is None else split_seed,
                            config.data.split.by)
        by_molecule = config.data.split.by == "molecule"
        for name, members in self.splits.items():
            if not len(members):
                units = f"{len(self.data.molecule_names)} molecules" if by_molecule else f"{len(self.data)} configurations"
                raise ConfigError(f"data.split.fractions.{name}", f"the {name} split gets none of the {units} of "
                                  f"{config.data.train.path}; give it a larger fraction"
                                  + (" or split by: configuration" if by_molecule else ""))
        self.train_set = self.data.subset(self.splits["train"])
        if not self.train_set.labelled(["energy"]).any():
            raise ConfigError("data.train.energy", f"{config.data.train.energy!r} has no value (all NaN) in the train "
                              f"split of {config.data.train.path}")
        self.reference = fit_reference_energies(self.train_set, "energy")
        self.species = sorted(int(z) for z in self.data.elements())
        self.eval_sets = {"test": self.data.subset(self.splits["test"])}
        periodic = [f"data.train ({config.data.train.path})"] if self.data.periodic else []
        for i, spec in enumerate(config.data.evaluate):
            name = spec.name or Path(spec.path).stem
            self.eval_sets[name] = self.read(spec, f"data.evaluate[{i}]")
            extra = sorted(set(self.eval_sets[name].elements().tolist()) - set(self.species))
            if extra:
                raise DataError(f"data.evaluate[{i}] ({spec.path}): elements {extra} do not occur in the training data "
                                f"(elements there: {self.species})")
            if self.eval_sets[name].periodic:
                periodic.append(f"data.evaluate[{i}] ({spec.path})")
        if periodic:
            self._check_periodic(periodic)
        # Every student block's extra sources are read now: a missing key or element is an error before any work.
        self._sources: dict[str, Dataset] = {}
        found = blocks_in(config, Source)  # e.g. student.sources.NAME, fidelities.F.sources.NAME
        names = [where.rsplit(".", 1)[-1] for where, _ in found]
        # YAML path of each source name, for errors found when a source is read again (labelled by the teachers)
        self._source_paths = {n: where for n, (where, _) in zip(names, found) if names.count(n) == 1}
        for where, source in found:
            if source.labelled_by == "teachers" and not where.startswith(tuple(f"{block}." for block in
                                                                               workflow.labelled_sources_at)):
                why = (f"in workflow {workflow.name!r} only the sources of {' and '.join(workflow.labelled_sources_at)} "
                       "are labelled by its teachers" if workflow.labelled_sources_at
                       else f"workflow {workflow.name!r} has no teachers to label a source")
                raise ConfigError(f"{where}.labelled_by", f"{why}; label this one first (kdframe data teacher-label)",
                                  ["file"])
            self._source(where.rsplit(".", 1)[-1], source, where)

    # --- the run directory ----------------------------------------------------------------------
    def lock(self) -> None:
        """Take ``run_dir/.lock`` before the first write (idempotent); under torchrun rank 0 holds it for all ranks.

        Every rank calls this at the same point (the first stage, knowledge or report), so all of them learn
        whether rank 0 got the lock and stop together with the same error.
        """
        if self._locked:
            return
        problem = lock_directory(self.dir) if distributed.is_main() else None
        if distributed.sum_all([float(problem is not None)])[0]:
            raise RunStateError(problem or f"{self.dir}: this run_dir is in use by another kdframe process "
                                "(see rank 0's message)")
        self._locked = True

    def close(self) -> None:
        """Give back the run directory's lock (if this run took it)."""
        if self._locked and distributed.is_main():
            unlock_directory(self.dir)
        self._locked = False

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_periodic(self, sources: Sequence[str]) -> None:
        """Periodic data needs architectures that handle cell images: said before any work, not mid-training."""
        archs = registry().architectures
        for where, spec in blocks_in(self.config, ModelSpec):
            if not archs[spec.architecture].periodic:
                raise ConfigError(f"{where}.architecture", f"{spec.architecture!r} does not handle periodic "
                                  f"configurations, which {' and '.join(sources)} holds",
                                  registry().periodic_architectures())

    def read(self, spec: DataFile, where: str, keys: Mapping[str, str] | None = None) -> Dataset:
        path = resolve_path(spec.path, self.config_dir)
        if not path.is_file():
            raise ConfigError(f"{where}.path", f"file not found: {path}")
        return read_dataset(path, spec.keys() if keys is None else keys, spec.units)

    # --- building blocks ----------------------------------------------------------------------
    def reference_for(self, heads: Sequence[str], energy_labels: Sequence[str] | None = None) -> torch.Tensor:
        """ref[Z, head]: data.train's energy fit for every head, or one fit per head on ``energy_labels``."""
        if energy_labels is None:
            return torch.as_tensor(np.repeat(self.reference[:, None], len(heads), axis=1))
        fits = [fit_reference_energies(self.train_set, label) for label in energy_labels]
        return torch.as_tensor(np.stack(fits, axis=1))

    def build(self, spec: ModelSpec, heads: Sequence[str] = ("energy",), seed: int = 0,
              energy_labels: Sequence[str] | None = None) -> Potential:
        torch.manual_seed(seed)
        arch = registry().architectures[spec.architecture]
        return Potential(arch, spec.hyperparameters(), self.species, heads, self.reference_for(heads, energy_labels))

    def fit(self, stage: str, student: Model, data: Dataset, seed: int, *, terms: Sequence[LossTerm] | None = None,
            train_idx: np.ndarray | None = None, valid_idx: np.ndarray | None = None,
            identity: Mapping[str, Any] | None = None, heads: Sequence[str] = ("energy",),
            energy_labels: Sequence[str] | None = None, probes: Mapping[str, ProbeSettings] | None = None,
            online: Sequence[tuple[KnowledgeSource, Teacher]] = (), start: Path | None = None,
            sources: Mapping[str, Source] | None = None, source_heads: Mapping[str, int] | None = None) -> Potential:
        """Train one Student block as a stage of this run, or load it if that stage already finished.

        ``terms`` default to the block's own; the splits to the run's. Everything that determines the
        result (the block, the data, the splits, ``identity`` such as teacher fingerprints) is recorded; a
        stage directory made with other settings is never silently reused. ``energy_labels`` (one per head)
        are what each head's reference energies are fitted on; ``probes`` and ``online`` go to the
        :class:`~kdframe.training.Trainer` (and into the record). ``start``: a saved model (of this block's
        architecture) to fine-tune instead of fresh weights; its checksum is recorded. ``sources`` (default: the
        block's own) are trained beside ``data``, each into its head in ``source_heads`` (default: the first).
        """
        terms = student.terms() if terms is None else list(terms)
        train_idx = self.splits["train"] if train_idx is None else train_idx
        valid_idx = self.splits["valid"] if valid_idx is None else valid_idx
        missing = sorted({t.label for t in terms} - set(data.labels) - {s.label for s, _ in online})
        if missing:
            raise ConfigError(stage, f"the loss names labels the data does not have: {', '.join(missing)}; "
                              "name their keys under data.train or drop those loss weights")
        stage_dir = self.dir / stage
        settings = student.settings(self.config.training)
        # Configurations carrying none of the terms' labels (e.g. no CC energy yet) only cost time.
        # The stage depends on the labels its terms use, not on others the file gains later.
        used = [term.label for term in terms if term.label in data.labels]  # not online knowledge
        labelled = data.labelled(used)
        used += [term.probe for term in terms if term.probe in data.labels]
        train_idx, valid_idx = train_idx[labelled[train_idx]], valid_idx[labelled[valid_idx]]
        train, valid = data.subset(train_idx), data.subset(valid_idx)
        if sources is None:
            sources = student.sources if isinstance(student, Student) else {}
        if sources:
            train, valid = self._with_sources(sources, train, valid)
            terms += source_terms(sources, source_heads)
        record = {"model": student.model.model_dump(), "training": settings.record(), "seed": seed,
                  "heads": list(heads), "terms": [[t.quantity, t.label, t.head] for t in terms],
                  "weights": student.model_dump().get("weights"), "data": data.content_hash(labels=used),
                  "train": fingerprint(train_idx.tolist()), "valid": fingerprint(valid_idx.tolist()), **(identity or {})}
        if sources:
            record["sources"] = {name: [source.model_dump(), part.content_hash()] for (name, source), part
                                 in zip(sources.items(), train.parts[1:])}
        monitor = student.monitored(terms) if isinstance(student, Student) else None
        if monitor is not None:
            record["monitor"] = monitor.name
        if energy_labels is not None:
            record["reference_labels"] = list(energy_labels)
        if probes:
            record["probes"] = {label: p.model_dump() for label, p in probes.items()}
        if start is not None:
            record["start"] = file_sha256(start)
        if online:
            record["online"] = {source.label: [source.describe(), teacher.fingerprint()] for source, teacher in online}
        self.lock()
        with distributed.main_first():  # under torchrun rank 0 writes stage.json, the others then check it
            self._claim_stage(stage_dir, record)
        if (stage_dir / MODEL_FILE).is_file():
            finished = self._finished_model(stage_dir, student.model, heads)
            if finished is not None:
                return finished.to(self.device)
        model = self.build(student.model, heads, seed, energy_labels) if start is None else Potential.load(start)
        trainer = Trainer(model, terms, train, valid, settings, stage_dir, seed, self.device, online=online,
                          probes=probes, progress=self.progress, monitor=monitor)
        model = trainer.fit()
        if distributed.is_main():
            model.save(stage_dir / MODEL_FILE)
        distributed.barrier()
        return model

    def _with_sources(self, sources: Mapping[str, Source], train: Dataset, valid: Dataset) -> tuple[Mixture, Mixture]:
        """The run's train and validation configurations mixed with each source's own split of its file."""
        train_parts, valid_parts = [train], [valid]
        for name, source in sources.items():
            data = self._named_source(name, source)
            order = self._draw(len(data), source.limit)
            cut = max(1, int(round(source.valid_fraction * len(order)))) if source.valid_fraction else 0
            valid_parts.append(data.subset(np.sort(order[:cut])))
            train_parts.append(data.subset(np.sort(order[cut:])))
        shares = [s.share for s in sources.values()]
        return Mixture(train_parts, [1 - sum(shares), *shares]), Mixture(valid_parts)

    def _draw(self, size: int, limit: int | None) -> np.ndarray:
        """``limit`` (None: all) of ``size`` configurations in a random order fixed by the run's seed; a smaller limit
        takes the first ones of the same draw."""
        return np.random.default_rng(self.config.seed).permutation(size)[:limit]

    def drawn(self, name: str, source: Any) -> np.ndarray:
        """Indices into a source's file (read at start-up) of the configurations its ``limit`` draws, ordered so that
        a file of just them, drawn again without a limit by :meth:`_with_sources`, holds out and trains on the same
        configurations as the whole file with the limit (nested across limits)."""
        chosen = self._draw(len(self._named_source(name, source)), source.limit)
        confs = np.empty_like(chosen)
        confs[self._draw(len(chosen), None)] = chosen  # the redraw's k-th pick is then the limit's k-th
        return confs

    def _named_source(self, name: str, source: Any) -> Dataset:
        """:meth:`_source`, its errors naming the source's YAML path where the name is unique in the config."""
        return self._source(name, source, self._source_paths.get(name, f"sources.{name}"))

    def _source(self, name: str, source: Any, where: str) -> Dataset:
        """One ``sources`` entry's file with its labels named ``NAME.QUANTITY``; read once per run."""
        key = json.dumps([name, source.model_dump()], sort_keys=True, default=str)
        if key not in self._sources:
            keys = {} if source.labelled_by == "teachers" else {f"{name}.{q}": k for q, k in source.keys().items()}
            try:
                data = self.read(DataFile(path=source.path, energy=source.energy or "", units=source.units), where, keys)
            except DataError as exc:  # e.g. a key the file lacks: say which YAML block named it
                raise DataError(f"{where}: {exc}") from None
            if source.confidence and source.labelled_by == "file":
                _check_spread(data, f"{name}.{SPREAD}", f"{where}.confidence.key", source)
            for quantity in ("forces", "hvp"):  # e.g. an energy key named here: one error, not a crash in training
                if source.labelled_by == "file" and quantity in source.weights:
                    _check_vectors(data, f"{name}.{quantity}", f"{where}.{quantity}", getattr(source, quantity), source)
            if source.labelled_by == "file" and "hvp" in source.weights:
                _check_probes(data, f"{name}.{PROBE}", f"{where}.hvp_probe", source)
            learns_atoms = source.atom_energies and "atom_energies" in source.weights  # a key in the file
            if learns_atoms and not _one_value_each(data, f"{name}.atom_energies", PER_ATOM):
                raise DataError(f"{where}.atom_energies: key {source.atom_energies!r} of {source.path} does not hold "
                                "one value per atom (valid: a per-atom energy key, e.g. teacher.atom_energies)")
            extra = sorted(set(data.elements().tolist()) - set(self.species))
            if extra:
                raise DataError(f"{where}.path ({source.path}): elements {extra} do not occur in the run's training "
                                f"data (elements there: {self.species})")
            if source.limit is not None and source.limit > len(data):
                raise ConfigError(f"{where}.limit", f"{source.limit} is more than the {len(data)} configurations "
                                  f"of {source.path}")
            self._sources[key] = data
        return self._sources[key]

    def _finished_model(self, stage_dir: Path, spec: ModelSpec, heads: Sequence[str]) -> Potential | None:
        """A finished stage's model.pt; None (with a note) when it is damaged and the stage's checkpoint can
        rebuild it. A damaged one without a checkpoint, or a model that is not this stage's, is an error."""
        path = stage_dir / MODEL_FILE
        todo = f"delete the folder {stage_dir} to train this stage again, or use a new run_dir"
        try:
            model = Potential.load(path)
        except DataError as exc:
            checkpoints = [stage_dir / name for name in (CHECKPOINT, PREVIOUS) if (stage_dir / name).is_file()]
            why = str(exc).removeprefix(f"{path}: ")
            if not checkpoints:
                raise RunStateError(f"{path}: the model of this finished stage cannot be loaded ({why}); {todo}") from None
            note(f"{path}: cannot be loaded ({why}); rebuilding it from {checkpoints[0].name}")
            return None
        found = {"architecture": model.architecture.name, "hyperparameters": model.hyperparameters, "heads": model.heads}
        wanted = {"architecture": spec.architecture, "hyperparameters": spec.hyperparameters(), "heads": list(heads)}
        changed = [k for k in found if json.dumps(found[k], sort_keys=True, default=str)
                   != json.dumps(wanted[k], sort_keys=True, default=str)]
        if changed:
            raise RunStateError(f"{path}: not the model this stage trains (its {', '.join(changed)} differ from "
                                f"{stage_dir / STAGE_FILE}); the file was replaced: {todo}")
        return model

    def _claim_stage(self, stage_dir: Path, record: dict[str, Any]) -> None:
        path = stage_dir / STAGE_FILE
        todo = f"delete the folder {stage_dir} to train this stage again, or use a new run_dir"
        if not path.is_file():
            made = [name for name in (MODEL_FILE, CHECKPOINT, PREVIOUS) if (stage_dir / name).is_file()]
            if made:
                raise RunStateError(f"{stage_dir}: holds {', '.join(made)} but no {STAGE_FILE}, so the settings that "
                                    f"made them are unknown; {todo}")
        if path.is_file():
            try:
                old = json.loads(path.read_text())
                if not isinstance(old, dict):
                    raise ValueError(f"a JSON {type(old).__name__}, not an object")
            except (ValueError, UnicodeDecodeError) as exc:
                raise RunStateError(f"{path}: unreadable stage record, truncated or damaged ({exc}); {todo}") from None
            if old != json.loads(json.dumps(record, default=str)):
                changed = sorted(k for k in set(old) | set(record) if old.get(k) != json.loads(json.dumps(record.get(k), default=str)))
                raise ConfigError(str(stage_dir), f"this stage was made with other settings (changed: {', '.join(changed)}); "
                                  "use a new run_dir or delete that folder")
            return
        atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True, default=str))  # makes stage_dir

    def knowledge(self, source: KnowledgeSource, teacher: Teacher, dataset: Dataset) -> np.ndarray:
        """``source``'s labels from ``teacher`` for every configuration, cached in ``run_dir/knowledge``."""
        self.lock()
        return offline_knowledge(source, teacher, dataset, self.dir / "knowledge", device=self.device,
                                 progress=self.progress)

    def scores(self, models: Mapping[str, Potential | Ensemble | Scored]) -> dict[str, dict[str, Metrics]]:
        """Metrics per evaluation set and table row; a row is left out of sets without its energy label."""
        results: dict[str, dict[str, Metrics]] = {}
        for set_name, dataset in self.eval_sets.items():
            results[set_name] = {}
            for name, row in models.items():
                row = row if isinstance(row, Scored) else Scored(row)
                if row.energy not in dataset.labels:
                    continue
                forces = row.forces if row.forces in dataset.labels else None
                hessian = row.hessian if row.hessian in dataset.labels else None
                stress = row.stress if row.stress in dataset.labels else None
                head = row.model.head_index(row.head, f"{name}: head") if row.head else 0
                results[set_name][name] = evaluate(row.model.to(self.device), dataset, row.energy, forces, head,
                                                   device=self.device, hessian_label=hessian, stress_label=stress)
        return results

    def evaluate(self, models: Mapping[str, Potential | Ensemble | Scored], title: str, notes: str = "",
                 results: Mapping[str, Mapping[str, Metrics]] | None = None) -> str:
        """Score the models (or take ``results`` from :meth:`scores`), write report.md, return the table.

        A report that cannot be written (a read-only run_dir, a full disk) is a warning: the table is still returned.
        """
        results = self.scores(models) if results is None else results
        self.lock()
        try:
            path = write_report(self.dir, title, results, notes)
        except WriteError as exc:
            warn(f"report.md could not be written ({exc}); the table below is not saved")
            return table(results)
        return f"{table(results)}\n\nReport: {path}"


@dataclass
class Scored:
    """One table row: a model's ``head`` (default: the first) scored against labels of the evaluation sets."""

    model: Potential | Ensemble
    head: str | None = None
    energy: str = "energy"
    forces: str = "forces"
    hessian: str = "hessian"
    stress: str = "stress"


def _check_spread(data: Dataset, label: str, where: str, source: Source) -> None:
    """A confidence key holds one spread ≥ 0 per configuration, not all 0 (a single teacher has no spread)."""
    what = f"{where}: key {source.confidence.key!r} of {source.path}"
    if not _one_value_each(data, label, PER_CONF):
        raise DataError(f"{what} does not hold one value per configuration (valid: a per-configuration spread, "
                        f"e.g. {', '.join(SPREADS)})")
    spread = np.asarray(data.labels[label], dtype=np.float64)
    if (spread < 0).any() or np.isinf(spread).any():
        raise DataError(f"{what} holds negative or infinite values: not a spread")
    if not (spread[~np.isnan(spread)] > 0).any():
        raise DataError(f"{what} is 0 (or missing) for every configuration: a single teacher has no spread; "
                        "confidence weighting needs an ensemble of 2 or more")


def _check_vectors(data: Dataset, label: str, where: str, key: str, source: Source) -> None:
    """A forces or hvp key holds one 3-vector per atom."""
    if not _one_value_each(data, label, PER_ATOM, (3,)):
        raise DataError(f"{where}: key {key!r} of {source.path} does not hold a 3-vector per atom (valid: e.g. "
                        f"teacher.{label.rpartition('.')[2]})")


def _check_probes(data: Dataset, label: str, where: str, source: Source) -> None:
    """The hvp probes hold one unit vector per configuration, complete or missing (NaN) on all its atoms."""
    _check_vectors(data, label, where, source.hvp_probe, source)
    batch = data.batch(np.arange(len(data)), [label])
    probes = batch.labels[label].double()
    counts = batch.atoms_per_conf()
    missing = torch.zeros(len(counts), dtype=torch.long).index_add_(
        0, batch.conf_index, torch.isnan(probes).any(dim=1).long())
    norms = torch.zeros(len(counts), dtype=torch.float64).index_add_(
        0, batch.conf_index, torch.nan_to_num(probes).pow(2).sum(1)).sqrt()
    what = f"{where}: key {source.hvp_probe!r} of {source.path}"
    valid = ("valid: one unit-norm probe per configuration, as kdframe data teacher-label --hvp writes; an ANI-layout "
             "file read in Hartree scales its probes too: give it units: ev, its H·v in eV/Å²")
    partial = torch.nonzero((missing > 0) & (missing < counts)).flatten()
    if len(partial):
        raise DataError(f"{what}: configuration {int(partial[0])} has a probe on some of its atoms only ({valid})")
    bad = torch.nonzero((missing == 0) & ((norms - 1).abs() > 1e-3)).flatten()
    if len(bad):
        raise DataError(f"{what}: configuration {int(bad[0])} has a probe of norm {float(norms[bad[0]]):.4g}, not 1 "
                        f"({valid})")


def _one_value_each(data: Dataset, label: str, kind: str, shape: tuple[int, ...] = ()) -> bool:
    """Whether ``label`` holds one value of ``shape`` per atom (``kind`` PER_ATOM: atom energies, or forces with
    shape (3,)) or per configuration (PER_CONF: a spread), not values of the other kind or shape."""
    if data.label_kind(label) != kind:
        return False
    return len(data) == 0 or data.batch(np.zeros(1, dtype=np.int64), [label]).labels[label].shape[1:] == shape


def knowledge_source(name: str, label: str, settings: Mapping[str, Any] | None = None) -> KnowledgeSource:
    """A registered knowledge source (built-in or a plugin's), writing its labels as ``label``."""
    return registry().lookup("knowledge_sources", name, "knowledge source")(label, dict(settings or {}))


def blocks_in(block: Any, kind: type | tuple[type, ...], where: str = "") -> list[tuple[str, Any]]:
    """Every block of type ``kind`` (model specs, Student blocks...) in a validated config, with its YAML path."""
    if isinstance(block, kind):
        return [(where, block)]
    if isinstance(block, pydantic.BaseModel):
        items = [(name, getattr(block, name)) for name in type(block).model_fields]
    elif isinstance(block, Mapping):
        items = list(block.items())
    elif isinstance(block, (list, tuple)):
        return [found for i, item in enumerate(block) for found in blocks_in(item, kind, f"{where}[{i}]")]
    else:
        return []
    return [found for key, value in items for found in blocks_in(value, kind, f"{where}.{key}" if where else str(key))]


def check_regularisers(config: Base) -> None:
    """Every regulariser a model is trained with is one its architecture declares; before any work."""
    archs = registry().architectures
    models = [(where, model) for where, block in blocks_in(config, (Model, Sweep))
              for model in (block.students() if isinstance(block, Sweep) else [block])]
    for where, block in models:
        declared = archs[block.model.architecture].regularisers if block.model is not None else None
        if declared is None:
            continue
        overridden = block.training.regularisers is not None
        for name in block.settings(config.training).regularisers:
            if name not in declared:
                path = f"{where}.training.regularisers" if overridden else "training.regularisers"
                hint = "" if overridden else f"; set {where}.training.regularisers: {{}} to train it without them"
                raise ConfigError(f"{path}.{name}", f"architecture {block.model.architecture!r} has no such "
                                  f"regulariser{hint}", declared)


def compare_files(compare: Mapping[str, Sequence[str]], name: str, config_dir: Path) -> list[Path]:
    """The model files of one ``compare`` row; glob patterns allowed (``../runs/x/teacher_*/model.pt``)."""
    found = []
    for i, pattern in enumerate(compare[name]):
        path = resolve_path(pattern, config_dir)
        matches = sorted(Path(p) for p in glob.glob(str(path))) if "*" in pattern else [path] * path.is_file()
        if not matches:
            raise ConfigError(f"compare.{name}[{i}]", f"model file not found: {pattern} "
                              "(train that run first, e.g. `kdframe train` on its config)")
        found += matches
    return found


def compared(compare: Mapping[str, Sequence[str]], config_dir: Path, device: torch.device) -> dict[str, Potential | Ensemble]:
    """The ``compare`` rows as models (an ensemble where a row names several files)."""
    models: dict[str, Potential | Ensemble] = {}
    for name in compare:
        members = [Potential.load(p).to(device) for p in compare_files(compare, name, config_dir)]
        models[name] = Ensemble(members) if len(members) > 1 else members[0]
    return models


def load_config(path: Path) -> tuple[Workflow, Base]:
    from ..config import load_yaml

    raw = load_yaml(path)
    name = raw.get("workflow")
    if name is None:
        raise ConfigError(f"{path}: workflow", "missing", registry().workflows)
    workflow = registry().lookup("workflows", str(name), f"{path}: workflow")
    return workflow, validate(workflow.Config, raw, str(path))
