"""YAML run configuration, validated before any work.

Every problem is reported as one :class:`~kdframe.errors.ConfigError` naming the file,
the YAML path (``student.training.lr``) and what would be valid.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic_core import PydanticCustomError

from .errors import ConfigError
from .plugins import registry
from .training.trainer import TrainSettings

BUNDLED_PREFIX = "bundled:"
BUNDLED_DIR = Path(__file__).parent / "datasets"


class Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")


class DataFile(Strict):
    """One data file and which of its keys play which role (ANI keys, e.g. ``ccsd(t)_dz.energy``)."""

    path: str
    energy: str
    forces: str | None = None  # reference forces: evaluated; trained on only where a workflow says so
    hessian: str | None = None  # reference Hessians (ANI layout (n_conf, 3N, 3N)): evaluated; trained on likewise
    stress: str | None = None  # reference stress (extxyz, eV/Å³, ASE's sign): evaluated; trained on likewise
    virials: str | None = None  # or reference virials (extxyz, eV, MACE's REF_virials): read as stress = -W / V
    units: Literal["auto", "hartree", "ev"] = "auto"
    name: str | None = None

    def keys(self) -> dict[str, str]:
        optional = {"forces": self.forces, "hessian": self.hessian, "stress": self.stress, "virials": self.virials}
        return {"energy": self.energy, **{k: v for k, v in optional.items() if v}}


    @pydantic.model_validator(mode="after")
    def _one_stress(self) -> "DataFile":
        if self.stress and self.virials:
            raise ValueError("give stress or virials, not both (both become the stress label)")
        return self


class SplitSpec(Strict):
    by: Literal["configuration", "molecule"] = "configuration"
    fractions: dict[Literal["train", "valid", "test"], float] = {"train": 0.8, "valid": 0.1, "test": 0.1}
    # The split's own seed (default: the run's), to vary the initial weights and batch order over seeds on one fixed
    # split of data.train (sources' subsets and trained teachers' own splits still follow the run's seed)
    seed: int | None = pydantic.Field(None, ge=0, le=2**32 - 1)

    @pydantic.field_validator("fractions")
    @classmethod
    def _all_three(cls, v: dict[str, float]) -> dict[str, float]:
        """All three, positive, summing to 1; kept in the canonical order train, valid, test (the split's order)."""
        if set(v) != {"train", "valid", "test"} or any(not x > 0 for x in v.values()):
            raise ValueError("needs positive fractions for all of train, valid and test")
        total = sum(v.values())
        if abs(total - 1) > 1e-6:
            raise ValueError(f"the fractions sum to {total:.6g}, not 1 (valid: train, valid and test summing to 1, "
                             "e.g. 0.8, 0.1, 0.1)")
        return {name: v[name] for name in ("train", "valid", "test")}


class DataSpec(Strict):
    train: DataFile
    split: SplitSpec = SplitSpec()
    evaluate: list[DataFile] = []


class ModelSpec(pydantic.BaseModel):
    """``architecture`` plus that architecture's hyperparameters, checked by its plugin when the YAML is read."""

    model_config = pydantic.ConfigDict(extra="allow")
    architecture: str

    def hyperparameters(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @pydantic.model_validator(mode="after")
    def _known_to_its_plugin(self) -> "ModelSpec":
        archs = registry().architectures
        if self.architecture not in archs:
            raise invalid(("architecture",), f"unknown architecture {self.architecture!r} "
                          f"(valid: {', '.join(sorted(archs)) or '(none)'})", self.architecture)
        hyperparameters = archs[self.architecture].Hyperparameters
        for key, value in self.hyperparameters().items():  # pydantic would read true/false as 1/0
            field = hyperparameters.model_fields.get(key)
            if isinstance(value, bool) and field is not None and field.annotation in (int, float):
                raise invalid((key,), f"{value!r} is not a number (valid: {field.annotation.__name__})", value)
        try:
            hyperparameters.model_validate(self.hyperparameters())
        except pydantic.ValidationError as exc:  # re-raised with each error at its key under this spec
            valid = ", ".join(sorted(hyperparameters.model_fields))
            raise pydantic.ValidationError.from_exception_data("hyperparameters", [
                _error(err["loc"], f"unknown key (valid: {valid})" if err["type"] == "extra_forbidden" else err["msg"],
                       err["input"]) for err in exc.errors()]) from None
        return self


def invalid(loc: tuple[str | int, ...], message: str, value: Any = None) -> pydantic.ValidationError:
    """An error at ``loc`` below the block being validated; raised in a validator, pydantic prefixes its path."""
    return pydantic.ValidationError.from_exception_data("config", [_error(loc, message, value)])


def _error(loc: tuple[str | int, ...], message: str, value: Any) -> dict[str, Any]:
    return {"type": PydanticCustomError("kdframe", "{message}", {"message": message}), "loc": loc, "input": value}


class Base(Strict):
    workflow: str
    run_dir: str = "runs/default"
    seed: int = pydantic.Field(0, ge=0, le=2**32 - 1)  # numpy's seed range
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataSpec
    training: TrainSettings = TrainSettings()


def resolve_path(path: str, config_dir: Path) -> Path:
    """Relative paths are relative to the YAML file; ``bundled:NAME`` is a dataset shipped with kdframe."""
    if path.startswith(BUNDLED_PREFIX):
        return BUNDLED_DIR / path[len(BUNDLED_PREFIX):]
    p = Path(path).expanduser()
    return p if p.is_absolute() else config_dir / p


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *anchor"; explicit keys may override merged ones
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a run file; ``extends: base.yaml`` (relative to this file) deep-merges this file over a base."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:  # a binary file, or text saved as Latin-1 / UTF-16
        raise ConfigError(str(path), f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          "give a YAML file saved as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), "the top level must be a mapping of keys", "workflow, data, ...")
    base = raw.pop("extends", None)
    if base is None:
        return raw
    base_path = (path.parent / str(base)).resolve()
    if base_path in _seen:
        raise ConfigError(f"{path}: extends", f"{base} extends itself in a loop")
    if not base_path.is_file():
        raise ConfigError(f"{path}: extends", f"base file not found: {base_path}")
    return deep_merge(load_yaml(base_path, (*_seen, path.resolve())), raw)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else, an empty mapping ``{}``, a model block of another
    ``architecture`` (whose keys would not fit) and a table keyed by epochs (a schedule: merged, its epochs would
    interleave with the base's) replace the base value."""
    merged = dict(base)
    for key, value in override.items():
        nested = isinstance(value, dict) and value and isinstance(merged.get(key), dict)
        if nested and ("architecture" in value and value["architecture"] != merged[key].get("architecture")
                       or _is_schedule(value)):
            nested = False
        merged[key] = deep_merge(merged[key], value) if nested else value
    return merged


def _is_schedule(mapping: dict) -> bool:
    """Keyed by epochs, as a schedule table reads them (``int(key)``: ``1`` or ``'1'``)."""
    return all(isinstance(k, int) or (isinstance(k, str) and k.strip().isdigit()) for k in mapping)


def validate(model: type[pydantic.BaseModel], raw: Any, source: str, prefix: str = "") -> Any:
    """``model.model_validate(raw)`` with pydantic's errors turned into one ConfigError naming YAML paths.

    Validators find the YAML file's folder (to resolve relative paths) as ``info.context["config_dir"]``.
    """
    try:
        return model.model_validate(raw, context={"config_dir": Path(source).parent})
    except pydantic.ValidationError as exc:
        raise config_error(exc, source, model, prefix) from None


def config_error(exc: pydantic.ValidationError, source: str, model: type[pydantic.BaseModel] | None = None,
                 prefix: str = "") -> ConfigError:
    """One ConfigError listing every problem as ``yaml.path: what is wrong (valid: ...)``."""
    lines = problems(exc, model, prefix)
    return ConfigError(source, lines[0] if len(lines) == 1 else "\n  " + "\n  ".join(lines))


def problems(exc: pydantic.ValidationError, model: type[pydantic.BaseModel] | None = None, prefix: str = "") -> list[str]:
    """Each of pydantic's errors as ``yaml.path: what is wrong (valid: ...)``."""
    lines = []
    for err in exc.errors():
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in ([prefix] * bool(prefix) + list(err["loc"])))
        path = path.removeprefix(".")
        if err["type"] == "extra_forbidden" and model is not None:
            lines.append(f"{path}: unknown key (valid: {', '.join(_fields_at(model, err['loc'][:-1]))})")
        else:
            problem = err["msg"].removeprefix("Value error, ")  # our validators' own words
            lines.append(f"{path}: {problem}" if path else problem)
    return lines


def _fields_at(model: type[pydantic.BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) model at ``loc``, for 'unknown key' messages."""
    in_container = False  # the previous part was a list or mapping of models: this part is an index or key
    for part in loc:
        if in_container:
            in_container = False
            continue
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, pydantic.BaseModel):
                model = candidate
                in_container = typing.get_origin(annotation) in (dict, list)
                break
        else:
            if isinstance(part, int):
                continue
            return []
    return sorted(model.model_fields)
