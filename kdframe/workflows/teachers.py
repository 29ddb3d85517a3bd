"""Where a run's teachers come from: trained here, saved model files, or a pretrained ensemble.

One YAML block for every workflow (EKD ``teachers``, atomic ``teacher``, multi-fidelity
``fidelities.NAME.teacher``), so any teacher teaches in any of them. Teachers from outside are
checked for the data's elements (one :class:`~kdframe.errors.ConfigError`) and, by default, put on
the data's energy scale by per-element offsets (:func:`kdframe.teacher.align_reference_energies`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pydantic

from ..config import Strict, invalid, resolve_path
from ..errors import ConfigError
from ..io import make_dir
from ..plugins import registry
from ..potential import Ensemble, Potential
from ..student import Source, Student
from ..teacher import Teacher, align_reference_energies
from ..probes import ProbeSettings
from ..teacher_labelling import ATOM_ENERGIES, ENERGY, FORCES, HVP, HVP_PROBE, TeacherSpec, teacher_label
from .base import Run, fingerprint

# Keys of the blocks this one replaced, and where they went.
OLD_KEYS = {"count": "train.count", "model": "train.model", "training": "train.training", "weights": "train.weights",
            "file": "files (a list of model files)", "teacher_forces": "teacher: {files: [...]}"}


class TrainedTeachers(Student):
    """``count`` models of one Student block, each on its own split of the training pool when there are several."""

    count: int = pydantic.Field(1, ge=1)


class TeacherSource(Strict):
    """Exactly one of ``train``, ``files`` or ``pretrained``."""

    train: TrainedTeachers | None = None
    files: list[str] = []  # saved kdframe models, any architecture; several make an ensemble
    pretrained: str | None = None  # a registered pretrained ensemble, e.g. ani1ccx
    # Teachers from files or pretrained: refit per-element energy offsets on the training split
    # (their level of theory's atomic energies differ; forces and conformer energy differences are unchanged).
    align_energies: bool = True
    _offsets: np.ndarray | None = pydantic.PrivateAttr(None)  # per-element shifts (eV) the alignment added

    @pydantic.model_validator(mode="before")
    @classmethod
    def _old_spellings(cls, raw: Any) -> Any:
        if isinstance(raw, Mapping):
            for key in raw:
                if key in OLD_KEYS:
                    raise ValueError(f"'{key}' is now '{OLD_KEYS[key]}' in a teacher block (keys: train, files, "
                                     "pretrained, align_energies)")
        return raw

    @pydantic.model_validator(mode="after")
    def _one_source(self, info: pydantic.ValidationInfo) -> "TeacherSource":
        if sum((self.train is not None, bool(self.files), self.pretrained is not None)) != 1:
            raise ValueError("give exactly one of 'train' (train teachers here), 'files' (saved models) "
                             "or 'pretrained' (a registered pretrained ensemble)")
        if self.pretrained is not None and self.pretrained not in registry().pretrained:
            raise invalid(("pretrained",), f"unknown pretrained {self.pretrained!r} "
                          f"(valid: {', '.join(sorted(registry().pretrained)) or '(none)'})", self.pretrained)
        config_dir = (info.context or {}).get("config_dir", Path.cwd())
        for i, path in enumerate(self.files):
            if not resolve_path(path, config_dir).is_file():
                raise invalid(("files", i), f"model file not found: {path} (relative paths are relative to the "
                              "YAML file)", path)
        return self

    def ensemble(self, run: Run, where: str, stage: str, seed: int, energy_label: str = "energy",
                 rename: Mapping[str, str] | None = None) -> Ensemble:
        """The teachers: trained as stages ``stage`` (``stage_1``... when several) or loaded and aligned.

        ``energy_label`` is the dataset label outside teachers are aligned to; ``rename`` maps the labels
        of trained teachers' loss terms (e.g. ``energy`` -> one fidelity's energies).
        """
        if self.train is not None:
            return Ensemble(self._trained(run, stage, seed, rename))
        if self.pretrained is not None:  # kept as its plugin made it (e.g. one AEV computation for all ANI members)
            ensemble = registry().pretrained[self.pretrained]().to(run.device)
            members, names = list(ensemble.members), [f"pretrained {self.pretrained}"] * len(ensemble.members)
        else:
            members = [Potential.load(resolve_path(p, run.config_dir)).to(run.device) for p in self.files]
            names, ensemble = self.files, Ensemble(members)
        for member, name in zip(members, names):
            missing = sorted(set(run.species) - set(member.species))
            if missing:
                raise ConfigError(where, f"{name} knows elements {member.species}, but the data also has {missing}")
        if self.align_energies:
            self._offsets = align_reference_energies(Teacher(ensemble, stage), run.train_set, energy_label, run.device)
        return ensemble

    def labelling_spec(self, run: Run, stage: str) -> tuple[TeacherSpec, np.ndarray | None]:
        """How :func:`kdframe.teacher_labelling.teacher_label` loads these teachers (after :meth:`ensemble`), and the
        energy offsets their alignment added (None: none)."""
        if self.pretrained is not None:
            return TeacherSpec(pretrained=self.pretrained), self._offsets
        if self.files:
            return TeacherSpec(models=tuple(str(resolve_path(p, run.config_dir)) for p in self.files)), self._offsets
        assert self.train is not None
        names = [stage] if self.train.count == 1 else [f"{stage}_{i + 1}" for i in range(self.train.count)]
        return TeacherSpec(models=tuple(str(run.dir / name / "model.pt") for name in names)), None

    def check_confidence(self, sources: Mapping[str, Source], where: str, teacher_key: str) -> None:
        """One error unless these teachers give the spread that ``labelled_by: teachers`` sources weight by."""
        single = (self.train is not None and self.train.count == 1) or len(self.files) == 1
        for name, source in sources.items():
            if single and source.labelled_by == "teachers" and source.confidence:
                raise ConfigError(f"{where}.{name}.confidence", "one teacher has no spread to weight by: give "
                                  f"{teacher_key}.train.count or {teacher_key}.files 2 or more, or drop confidence")

    def labelled_sources(self, run: Run, sources: Mapping[str, Source], teacher_fingerprint: str,
                         stage: str) -> dict[str, Source]:
        """``sources`` with each ``labelled_by: teachers`` one replaced by the packed file these teachers (stages
        ``stage``..., after :meth:`ensemble`) labelled, aligned; labelled once into run_dir/knowledge, resumable, and
        reused while teachers and file stay. A source with a ``limit`` has only the configurations it draws labelled
        (:meth:`Run.drawn`: the same ones held out and trained on), unless the whole file's labels are already
        there (made by a run without a limit, or copied from one). Labels of the same teachers and configurations
        under another alignment in run_dir/knowledge (another seed's, copied there) are shifted to this run's offsets
        instead of labelling again."""
        todo = {name: s for name, s in sources.items() if s.labelled_by == "teachers"}
        if not todo:
            return dict(sources)
        spec, offsets = self.labelling_spec(run, stage)
        labelled = dict(sources)
        for name, source in todo.items():
            path = resolve_path(source.path, run.config_dir)
            stat = path.stat()
            atoms = "atom_energies" in source.weights  # the teachers' per-atom energies too (a file of its own)
            hvp = (source.probes or ProbeSettings()) if "hvp" in source.weights else None  # and their H·v
            key = [teacher_fingerprint, str(path.resolve()), stat.st_size, stat.st_mtime_ns]
            key += ["atom_energies"] if atoms else []
            key += [["hvp", hvp.model_dump()]] if hvp else []
            out = run.dir / "knowledge" / f"teacher_labels-{name}-{fingerprint(key)}.h5"
            confs, update = None, {}
            if source.limit is not None and not out.is_file():
                key += ["drawn", source.limit, run.config.seed]
                out = out.with_name(f"teacher_labels-{name}-{fingerprint(key)}.h5")
                confs, update = run.drawn(name, source), {"limit": None}
            if not out.is_file():
                run.lock()
                make_dir(out.parent)
                others = sorted(out.parent.glob(f"teacher_labels-{name}-*.h5"))  # e.g. copied from another seed's run
                teacher_label(path, out, spec, offsets=offsets, atom_energies=atoms, hvp=hvp, progress=run.progress,
                              device=str(run.device), confs=confs, realign_from=others)
            keys = {"energy": ENERGY, "forces": FORCES, **({"atom_energies": ATOM_ENERGIES} if atoms else {}),
                    **({"hvp": HVP, "hvp_probe": HVP_PROBE, "probes": None} if hvp else {})}
            labelled[name] = source.model_copy(update={"path": str(out), "labelled_by": "file", **update, **keys})
        return labelled

    def _trained(self, run: Run, stage: str, seed: int, rename: Mapping[str, str] | None) -> list[Potential]:
        block = self.train
        assert block is not None
        if block.count == 1:
            return [run.fit(stage, block, run.data, seed, terms=block.terms(rename))]
        pool = np.concatenate([run.splits["train"], run.splits["valid"]])
        fractions = run.config.data.split.fractions
        train_share = fractions["train"] / (fractions["train"] + fractions["valid"])
        teachers = []
        for i in range(block.count):
            order = np.random.default_rng(run.config.seed + 1000 + i).permutation(pool)  # own data split per teacher
            cut = int(round(train_share * len(order)))
            teachers.append(run.fit(f"{stage}_{i + 1}", block, run.data, seed + i, terms=block.terms(rename),
                                    train_idx=np.sort(order[:cut]), valid_idx=np.sort(order[cut:])))
        return teachers
