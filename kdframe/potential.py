"""A trained or trainable MLIP: an architecture's network plus the core's conventions.

Reference-energy convention (shared by every architecture, so teachers and
students of different families agree): per-species reference energies
``ref[Z, head]`` are fitted by least squares on the training split and the
network learns what is left. A configuration's energy is
``E = sum_i (e_i^net + ref[Z_i])`` and an atom's energy is
``e_i = e_i^net + ref[Z_i]``, all in eV.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from . import derivatives
from .architecture import Architecture, EnergyModel, ModelOutput
from .batch import Batch
from .errors import ArchitectureError, ConfigError, DataError, KdframeError
from .io import atomic_write

MODEL_FORMAT = "kdframe-model/1"


def model_dtype(module: torch.nn.Module) -> torch.dtype:
    """The floating dtype of a model's weights (integer lookup tables, as in hippynn, are skipped)."""
    return next(p.dtype for p in module.parameters() if p.is_floating_point())


def state_copy(module: torch.nn.Module, device: str | torch.device | None = None) -> dict[str, Any]:
    """A detached copy of ``module.state_dict()``; non-tensor entries (a layer's extra state) kept as they are."""
    return {k: (v.detach().clone().to(device or v.device) if torch.is_tensor(v) else v)
            for k, v in module.state_dict().items()}


def with_derivatives(energies: Callable[[Batch], dict[str, torch.Tensor]], batch: Batch, forces: bool, stress: bool,
                     create_graph: bool) -> dict[str, torch.Tensor]:
    """``energies(batch)`` plus, if asked, forces and stress by one autograd pass (per head) in the core."""
    if forces and not batch.positions.requires_grad:
        batch.positions.requires_grad_(True)
    inner, strain = derivatives.strained(batch) if stress else (batch, None)
    result = energies(inner)
    wanted = ([batch.positions] if forces else []) + ([strain] if stress else [])
    if wanted:
        gradients = derivatives.energy_gradients(result["energy"], wanted, create_graph)
        if forces:
            result["forces"] = -gradients[0]
        if stress:
            result["stress"] = derivatives.stress(gradients[-1], batch)
    return result


class Potential(torch.nn.Module):
    def __init__(
        self,
        architecture: Architecture,
        hyperparameters: dict[str, Any],
        species: Sequence[int],
        heads: Sequence[str] = ("energy",),
        reference_energies: torch.Tensor | None = None,
    ):
        super().__init__()
        architecture.prepare()
        self.architecture = architecture
        self.hyperparameters = dict(hyperparameters)
        self.species = sorted(int(z) for z in species)
        self.heads = list(heads)
        parsed = architecture.parse(self.hyperparameters)
        self.net: EnergyModel = architecture.build(parsed, self.species, self.heads)
        ref = torch.zeros(max(self.species) + 1, len(self.heads), dtype=torch.float64)
        if reference_energies is not None:
            ref[: reference_energies.shape[0]] = reference_energies.to(ref)
        self.register_buffer("reference_energies", ref)
        self._output_checked = False  # finiteness of the network's output is checked on its first call
        known = torch.zeros(max(self.species) + 1, dtype=torch.bool)
        known[self.species] = True
        self.register_buffer("_known_species", known, persistent=False)

    def _apply(self, fn, recurse=True):
        """``.to(float32)`` and friends convert the network; reference energies stay float64 (on the new device)."""
        reference = self.reference_energies
        super()._apply(fn, recurse)
        self.reference_energies = reference.to(self.reference_energies.device, torch.float64)
        return self

    def head_index(self, head: str, where: str = "head") -> int:
        """Index of a named head; unknown names are an error, never silently another head."""
        if head not in self.heads:
            raise ConfigError(where, f"unknown head {head!r}", self.heads)
        return self.heads.index(head)

    def check_species(self, species: torch.Tensor, where: str) -> None:
        unknown = sorted(set(torch.unique(species).tolist()) - set(self.species))
        if unknown:
            raise DataError(f"{where}: elements {unknown} are outside this model's set {self.species}")

    def forward(self, batch: Batch, forces: bool = True, create_graph: bool = False,
                stress: bool = False) -> dict[str, torch.Tensor]:
        """Energies (n_conf, n_heads), atom energies (n_atoms, n_heads) and, if asked, forces (n_atoms, 3, n_heads)
        and stress (n_conf, 3, 3, n_heads; NaN where not periodic in 3D), all float64 but forces."""
        if not self.architecture.periodic and batch.pbc is not None and bool(batch.pbc.any()):
            from .plugins import registry  # here, not at import: the registry loads the plugins

            raise DataError(f"architecture {self.architecture.name!r} does not handle periodic configurations "
                            f"(pbc); use one that does ({', '.join(registry().periodic_architectures())}) "
                            "or open boundaries")
        self._refuse_unknown_species(batch.species)
        return with_derivatives(self._energies, batch, forces, stress, create_graph)

    def _refuse_unknown_species(self, species: torch.Tensor) -> None:
        """Elements outside the model's set are a DataError before the network sees them (networks may silently
        treat them as padding or as another element). One small lookup and a device sync per call."""
        known = getattr(self, "_known_species", None)
        if known is None:  # a Potential pickled before this check existed
            known = torch.zeros(max(self.species) + 1, dtype=torch.bool)
            known[self.species] = True
        if known.device != species.device:
            known = known.to(species.device)
        inside = (species > 0) & (species < len(known))
        if not bool((inside & known[species.clamp(0, len(known) - 1)]).all()):
            self.check_species(species, f"{self.architecture.name} model")
            raise DataError(f"{self.architecture.name} model: elements outside this model's set {self.species}")

    def _energies(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = self.net(batch)
        self._check_output(out, batch)
        # Totals are summed in float64: molecular energies are ~1e4 eV, where float32 resolves only ~1 meV.
        atom_ref = self.reference_energies.double()[batch.species]
        return {
            "energy": out.energy.double() + batch.sum_per_conf(atom_ref),
            "atom_energies": out.atom_energies.double() + atom_ref,
            **{f"regulariser:{k}": v for k, v in out.regularisers.items()},
        }

    def _check_output(self, out: ModelOutput, batch: Batch) -> None:
        """The plugin's output is a ModelOutput of the contract's shapes and a floating dtype (free: metadata only);
        finite on a model's first call only (a device sync). Otherwise one :class:`ArchitectureError` naming the
        architecture and what was expected: an (n_conf,) energy would broadcast into an (n_conf, n_conf) table."""
        name = self.architecture.name
        where = f"architecture {name!r} ({type(self.net).__module__}.{type(self.net).__qualname__})"
        hint = f"; see docs/plugins.md and run the conformance kit: python -m kdframe.testing {name}"
        if not isinstance(out, ModelOutput):
            raise ArchitectureError(f"{where}: the network returned {type(out).__name__}, expected "
                                    f"kdframe.architecture.ModelOutput(energy, atom_energies){hint}")
        n_heads = len(self.heads)
        for field_name, value, shape, named in (("energy", out.energy, (batch.n_conf, n_heads), "n_conf, n_heads"),
                                                ("atom_energies", out.atom_energies, (batch.n_atoms, n_heads),
                                                 "n_atoms, n_heads")):
            if not torch.is_tensor(value):
                raise ArchitectureError(f"{where}: ModelOutput.{field_name} is {type(value).__name__}, expected a "
                                        f"tensor of shape ({named}) = {shape}{hint}")
            if tuple(value.shape) != shape:
                raise ArchitectureError(f"{where}: ModelOutput.{field_name} has shape {tuple(value.shape)}, expected "
                                        f"({named}) = {shape} for {batch.n_conf} configuration(s), {batch.n_atoms} "
                                        f"atom(s) and {n_heads} head(s){hint}")
            if not value.is_floating_point():
                raise ArchitectureError(f"{where}: ModelOutput.{field_name} has dtype {value.dtype}, expected a "
                                        f"floating-point tensor{hint}")
        regularisers = out.regularisers
        if not isinstance(regularisers, dict) or any(not torch.is_tensor(v) or v.dim() != 0
                                                     for v in regularisers.values()):
            raise ArchitectureError(f"{where}: ModelOutput.regularisers must be a dict of 0-dim tensors, got "
                                    f"{_shapes(regularisers)}{hint}")
        if not getattr(self, "_output_checked", False):
            self._output_checked = True
            finite = torch.isfinite(out.energy).all() & torch.isfinite(out.atom_energies).all()
            if not bool(finite | ~torch.isfinite(batch.positions).all()):
                raise ArchitectureError(f"{where}: the network's first output has non-finite energies (NaN or inf) "
                                        f"for finite positions{hint}")

    # --- persistence -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        state = {
            "format": MODEL_FORMAT,
            "architecture": self.architecture.name,
            "hyperparameters": self.hyperparameters,
            "species": self.species,
            "heads": self.heads,
            "dtype": str(model_dtype(self.net)).removeprefix("torch."),
            "state_dict": state_copy(self, "cpu"),
        }
        atomic_write(path, lambda f: torch.save(state, f))

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> "Potential":
        from .plugins import registry

        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: model file not found")
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except PermissionError:
            raise  # the CLI names the file; not a damaged one
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
            why = " ".join(str(exc).split()).partition(". ")[0].rstrip(".")  # torch's messages run on
            raise DataError(f"{path}: not a kdframe model file, or a truncated or damaged one "
                            f"({exc.__class__.__name__}: {why})") from None
        if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
            raise DataError(f"{path}: not a kdframe model file (expected format {MODEL_FORMAT})")
        missing = [k for k in ("architecture", "hyperparameters", "species", "heads", "state_dict") if k not in state]
        if missing:
            raise DataError(f"{path}: damaged kdframe model file (no {', '.join(missing)} in it)")
        architecture = registry().lookup("architectures", state["architecture"], f"{path}: architecture")
        altered = "; the file was altered or damaged: use the original file, or train or export the model again"
        try:
            model = cls(architecture, state["hyperparameters"], state["species"], state["heads"])
        except KdframeError:
            raise
        except Exception as exc:  # noqa: BLE001 - pydantic, or the architecture's own checks
            why = " ".join(str(exc).split())[:300]
            raise DataError(f"{path}: its hyperparameters do not make a {architecture.name} model "
                            f"({exc.__class__.__name__}: {why}){altered}") from None
        model.to(getattr(torch, state.get("dtype", "float64")))
        try:
            model.load_state_dict(state["state_dict"])
        except (RuntimeError, KeyError, TypeError) as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            first = lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
            raise DataError(f"{path}: its weights do not fit the model its hyperparameters describe "
                            f"({first.rstrip('.')}){altered}") from None
        return model

    def n_weights(self, frozen_too: bool = False) -> int:
        """Trainable weights; ``frozen_too``: also those frozen (a pretrained teacher's), as when it was trained."""
        if frozen_too:
            return sum(p.numel() for p in self.net.parameters() if p.is_floating_point())
        return sum(p.numel() for p in self.trainable_weights())

    def trainable_weights(self) -> list[torch.nn.Parameter]:
        """Trainable floating-point parameters of the network (lookup tables and frozen ones left out)."""
        return [p for p in self.net.parameters() if p.requires_grad and p.is_floating_point()]


def _shapes(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_shapes(v)}" for k, v in value.items()) + "}"
    return f"tensor of shape {tuple(value.shape)}" if torch.is_tensor(value) else type(value).__name__


class Ensemble(torch.nn.Module):
    """Mean of several potentials; its forces are the ensemble-averaged forces (autograd of the mean)."""

    def __init__(self, members: Sequence[Potential]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.heads = members[0].heads
        self.species = sorted(set().union(*(m.species for m in members)))

    def forward(self, batch: Batch, forces: bool = True, create_graph: bool = False,
                stress: bool = False) -> dict[str, torch.Tensor]:
        return with_derivatives(self._energies, batch, forces, stress, create_graph)

    def _energies(self, batch: Batch) -> dict[str, torch.Tensor]:
        outs = [m(batch, forces=False) for m in self.members]
        return {k: torch.stack([o[k] for o in outs]).mean(0) for k in ("energy", "atom_energies")}

    def head_index(self, head: str, where: str = "head") -> int:
        return self.members[0].head_index(head, where)

    def check_species(self, species: torch.Tensor, where: str) -> None:
        for m in self.members:
            m.check_species(species, where)
