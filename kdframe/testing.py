"""Conformance kit for architecture plugins: what every kdframe architecture must satisfy.

Use it from pytest by subclassing :class:`ArchitectureConformance` in your plugin's tests::

    from kdframe.testing import ArchitectureConformance

    class TestMyArchConformance(ArchitectureConformance):
        architecture = "myarch"              # the registered name (entry point) -- or an Architecture instance
        hyperparameters = {"width": 8}       # keep it tiny: every check builds a few models

or without pytest: ``python -m kdframe.testing myarch --hyperparameters '{"width": 8}'``, or
``Conformance("myarch", {...}).run()``.

Every check builds small, physical molecules (H, C, N, O) in memory and raises
:class:`ConformanceError` (an ``AssertionError``) naming the property that failed and by how much.

The checks are the methods of :class:`Conformance` decorated with :func:`check`, in the order of
``Conformance.CHECKS``; each one's docstring says what it checks (``python -m kdframe.testing --list``, and
the list at the end of this docstring, are made from them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pydantic
import torch

from . import derivatives
from .architecture import Architecture, ModelOutput
from .batch import Batch
from .errors import DataError
from .potential import Potential, model_dtype

__all__ = ["ArchitectureConformance", "Conformance", "ConformanceError", "SkipCheck", "Tolerances",
           "MOLECULES", "make_batch", "molecules", "random_rotation"]


class ConformanceError(AssertionError):
    """A conformance property does not hold; the message says which and by how much."""


class SkipCheck(Exception):
    """A check that does not apply to this architecture (e.g. heads when ``max_heads == 1``)."""


# --- molecules -------------------------------------------------------------------------------------
# Equilibrium-like geometries (Å), centred near the origin; the shortest distance is ~0.95 Å (O-H).
MOLECULES: dict[str, tuple[list[int], list[list[float]]]] = {
    "water": ([8, 1, 1], [[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]]),
    "methane": ([6, 1, 1, 1, 1], [[0.0, 0.0, 0.0], [0.629, 0.629, 0.629], [-0.629, -0.629, 0.629],
                                  [-0.629, 0.629, -0.629], [0.629, -0.629, -0.629]]),
    "ammonia": ([7, 1, 1, 1], [[0.0, 0.0, 0.1], [0.94, 0.0, -0.27], [-0.47, 0.814, -0.27], [-0.47, -0.814, -0.27]]),
    "methanol": ([6, 8, 1, 1, 1, 1], [[-0.047, 0.664, 0.0], [-0.047, -0.758, 0.0], [-1.086, 0.975, 0.0],
                                       [0.431, 1.08, 0.89], [0.431, 1.08, -0.89], [0.878, -1.056, 0.0]]),
    "hydrogen_cyanide": ([1, 6, 7], [[0.0, 0.0, -1.63], [0.0, 0.0, -0.57], [0.0, 0.0, 0.58]]),
}


# A triclinic cell (Å, rows = lattice vectors) narrower than twice the kit models' cutoffs, so atoms meet their own
# images and several images of each neighbour; the molecules' centres in fractional coordinates (the first lies
# on a corner, so some of its atoms are outside the cell). Nearest intermolecular contact (images included) for
# the default molecules: 1.8 Å.
PERIODIC_CELL = [[6.2, 0.0, 0.0], [1.3, 5.9, 0.0], [-0.9, 1.1, 6.4]]
PERIODIC_CENTRES = [[0.02, 0.03, 0.01], [0.52, 0.48, 0.46], [0.35, 0.05, 0.62]]


def random_rotation(generator: torch.Generator) -> torch.Tensor:
    """A random proper rotation matrix (float64)."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def molecules(names: Sequence[str], seed: int = 0, distortion: float = 0.05) -> list[tuple[list[int], torch.Tensor]]:
    """The named molecules, randomly rotated and distorted by ``distortion`` Å, all centred at the origin."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for name in names:
        species, pos = MOLECULES[name]
        pos = torch.tensor(pos, dtype=torch.float64) @ random_rotation(g).T
        pos = pos + distortion * torch.randn(pos.shape, generator=g, dtype=torch.float64)
        out.append((list(species), pos - pos.mean(0)))
    return out


def make_batch(mols: Sequence[tuple[Sequence[int], torch.Tensor]], dtype: torch.dtype = torch.float64) -> Batch:
    species = torch.tensor([z for s, _ in mols for z in s], dtype=torch.long)
    positions = torch.cat([p for _, p in mols]).detach().clone().to(dtype)
    conf_index = torch.cat([torch.full((len(s),), i, dtype=torch.long) for i, (s, _) in enumerate(mols)])
    return Batch(species=species, positions=positions, conf_index=conf_index, n_conf=len(mols))


def _supercell(batch: Batch, repeats: tuple[int, int, int]) -> Batch:
    """The one periodic configuration of ``batch`` repeated ``repeats`` times along its lattice vectors."""
    cell = batch.cell[0]
    grid = torch.cartesian_prod(*(torch.arange(n) for n in repeats)).to(cell.dtype)
    offsets = (grid @ cell).repeat_interleave(batch.n_atoms, dim=0)
    return dataclasses.replace(batch, species=batch.species.repeat(len(grid)),
                               positions=batch.positions.repeat(len(grid), 1) + offsets,
                               conf_index=batch.conf_index.repeat(len(grid)),
                               cell=(torch.tensor(repeats, dtype=cell.dtype)[:, None] * cell)[None])


def _around(values: torch.Tensor) -> torch.Tensor:
    """For each row of ``values`` (n, k), the largest of the two rows before it and the two after it."""
    padded = torch.nn.functional.pad(values.T, (2, 2)).T
    return torch.stack([padded[k:k + len(values)] for k in (0, 1, 3, 4)]).max(0).values


def _concatenate(batches: Sequence[Batch]) -> Batch:
    """One batch of the configurations of ``batches``, in order; open ones get a zero cell when others are periodic."""
    periodic = any(b.pbc is not None for b in batches)
    cells, pbcs = [], []
    for b in batches:
        cells.append(b.cell if b.cell is not None else torch.zeros((b.n_conf, 3, 3), dtype=b.positions.dtype))
        pbcs.append(b.pbc if b.pbc is not None else torch.zeros((b.n_conf, 3), dtype=torch.bool))
    offsets = torch.cumsum(torch.tensor([0] + [b.n_conf for b in batches[:-1]]), 0)
    return Batch(species=torch.cat([b.species for b in batches]),
                 positions=torch.cat([b.positions for b in batches]).detach().clone(),
                 conf_index=torch.cat([b.conf_index + o for b, o in zip(batches, offsets)]),
                 n_conf=sum(b.n_conf for b in batches),
                 cell=torch.cat(cells).to(batches[0].positions.dtype) if periodic else None,
                 pbc=torch.cat(pbcs) if periodic else None)


def _with_positions(batch: Batch, positions: torch.Tensor) -> Batch:
    """The same batch with new, grad-free positions (Potential.forward marks positions in place)."""
    return dataclasses.replace(batch, positions=positions.detach().clone(), labels=dict(batch.labels))


def _morse(species: torch.Tensor, positions: torch.Tensor, conf_index: torch.Tensor, n_conf: int) -> torch.Tensor:
    """An analytic Morse pair energy (eV) per configuration: learnable targets for the training check."""
    radius = torch.zeros(9, dtype=positions.dtype)
    radius[[1, 6, 7, 8]] = torch.tensor([0.35, 0.75, 0.72, 0.70], dtype=positions.dtype)
    i, j = torch.triu_indices(len(species), len(species), 1)
    same = conf_index[i] == conf_index[j]
    i, j = i[same], j[same]
    r = (positions[i] - positions[j]).norm(dim=-1)
    x = torch.exp(-1.8 * (r - radius[species[i].clamp(max=8)] - radius[species[j].clamp(max=8)]))
    return positions.new_zeros(n_conf).index_add(0, conf_index[i], 2.0 * (x * x - 2 * x))


# --- tolerances ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Tolerances:
    """Relative tolerances: a difference is compared with ``tolerance * max(1, max|expected|)``."""

    sum: float = 1e-9  # energy vs sum of atom energies
    batch: float = 1e-9  # atom energies alone / batched / reordered / round-tripped
    invariance: float = 1e-8  # energies under translation, rotation, permutation
    forces: float = 1e-6  # autograd forces vs central differences
    hvp: float = 1e-5  # double-backward Hessian-vector products vs differences of forces
    fd_step: float = 1e-5  # Å, central-difference step
    float32: float = 1e-4  # float32 vs float64 energies, same weights
    save_load: float = 0.0  # reloaded vs saved model (bit-identical by default)
    heads_differ: float = 1e-6  # the two head columns must differ by at least this much (eV)
    continuity: float = 1e-5  # energy step vs the trapezoid of the forces, moving an atom through the cutoff
    continuity_step: float = 0.004  # Å, the step of that scan


FLOAT32_TOLERANCES = Tolerances(sum=1e-5, batch=1e-5, invariance=1e-5, forces=2e-2, hvp=5e-2, fd_step=1e-2,
                                float32=1e-4, continuity=1e-3)
# The scan of cutoff_continuity: an atom moved from this distance to that one (Å), through every cutoff below it.
CONTINUITY_RANGE = (1.5, 10.0)


def _compare(check: str, what: str, actual: torch.Tensor, expected: torch.Tensor, tolerance: float,
             where: Callable[[tuple[int, ...]], str] | None = None) -> None:
    """Raise ConformanceError unless ``|actual - expected| <= tolerance * max(1, max|expected|)`` everywhere."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    if actual.shape != expected.shape:
        raise ConformanceError(f"{check}: {what}: shape {tuple(actual.shape)} where {tuple(expected.shape)} was expected")
    if not torch.isfinite(actual).all():
        raise ConformanceError(f"{check}: {what}: non-finite values {actual[~torch.isfinite(actual)][:4].tolist()}")
    if actual.numel() == 0:
        return
    diff = (actual - expected).abs()
    scale = max(1.0, float(expected.abs().max()))
    worst = float(diff.max())
    if worst > tolerance * scale:
        index = tuple(int(k) for k in torch.unravel_index(diff.argmax(), diff.shape))
        at = where(index) if where else f"index {index}"
        raise ConformanceError(
            f"{check}: {what}: max |difference| = {worst:.3g} (relative {worst / scale:.3g}) > tolerance "
            f"{tolerance:.3g} x {scale:.3g}; worst at {at}: {float(actual[index]):.10g} vs expected "
            f"{float(expected[index]):.10g}")


def _atom_where(batch: Batch) -> Callable[[tuple[int, ...]], str]:
    def where(index: tuple[int, ...]) -> str:
        atom = index[0]
        text = f"atom {atom} (Z={int(batch.species[atom])}, configuration {int(batch.conf_index[atom])})"
        rest = index[1:]
        if len(rest) == 2:
            return text + f", axis {'xyz'[rest[0]]}, head {rest[1]}"
        if len(rest) == 1:
            return text + f", head {rest[0]}"
        return text
    return where


def _conf_where(index: tuple[int, ...]) -> str:
    return f"configuration {index[0]}" + (f", head {index[1]}" if len(index) > 1 else "")


# --- the checks ------------------------------------------------------------------------------------
_CHECKS: dict[str, Callable[..., None]] = {}
_HINTED: set[str] = set()  # architecture names whose "not registered" how-to was shown


def check(function: Callable[..., None]) -> Callable[..., None]:
    """Register a ``check_NAME`` method of :class:`Conformance` as the check ``NAME`` (its docstring says what it
    checks). The checks run in the order they are defined."""
    name = function.__name__.removeprefix("check_")
    if not function.__doc__:
        raise TypeError(f"conformance check {name!r} needs a docstring")
    _CHECKS[name] = function
    return function


def describe(name: str) -> str:
    """The docstring of check ``name``, on one line."""
    return " ".join(_CHECKS[name].__doc__.split())


class Conformance:
    """The conformance checks of one architecture, runnable with or without pytest.

    ``architecture`` is a registered name (what YAML writes) or an :class:`Architecture` instance.
    ``layout_round_trip``, if given, converts a Batch to the plugin's native layout and back
    (``Batch -> Batch``); by default the core's padded layout is used.
    """

    CHECKS: ClassVar[tuple[str, ...]]  # every check's name, in order (set below from the @check methods)

    def __init__(
        self,
        architecture: str | Architecture,
        hyperparameters: dict[str, Any] | None = None,
        *,
        species: Sequence[int] = (1, 6, 7, 8),
        heads: Sequence[str] = ("lo", "hi"),
        float64_ok: bool = True,
        tolerances: Tolerances | dict[str, float] | None = None,
        train_lr: float = 1e-3,
        heads_share_weights: bool = True,
        layout_round_trip: Callable[[Batch], Batch] | None = None,
        seed: int = 0,
    ):
        self.name = architecture if isinstance(architecture, str) else architecture.name
        self._architecture = architecture
        self.hyperparameters = dict(hyperparameters or {})
        self.species = sorted(int(z) for z in species)
        self.float64_ok = float64_ok
        base = Tolerances() if float64_ok else FLOAT32_TOLERANCES
        if isinstance(tolerances, dict):
            tolerances = dataclasses.replace(base, **tolerances)
        self.tol = tolerances or base
        self.train_lr = train_lr
        self.heads_share_weights = heads_share_weights
        self.layout_round_trip = layout_round_trip
        self.seed = seed
        self.exact_dtype = torch.float64 if float64_ok else torch.float32
        self._heads = list(heads)
        self._cache: dict[tuple, Potential] = {}

    # --- building ----------------------------------------------------------------------------------
    @property
    def architecture(self) -> Architecture:
        if isinstance(self._architecture, Architecture):
            return self._architecture
        from .plugins import registry

        found = registry().architectures.get(self._architecture)
        if found is None:
            if self._architecture in _HINTED:  # the how-to once per session, not once per check
                raise ConformanceError(f"registered: no architecture {self._architecture!r} in kdframe's registry "
                                       "(see the first failure for how to register it)")
            _HINTED.add(self._architecture)
            raise ConformanceError(
                f"registered: no architecture {self._architecture!r} in kdframe's registry (registered: "
                f"{', '.join(sorted(registry().architectures)) or 'none'}). Is the plugin installed "
                f"(pip install -e .) with an entry point in the 'kdframe' group, and does its "
                f"register_architectures hook call register(...)? `kdframe plugins` lists what failed to load.")
        return found

    @property
    def heads(self) -> list[str]:
        """Two heads unless the architecture allows only one."""
        max_heads = self.architecture.max_heads
        return self._heads[:max_heads] if max_heads is not None else self._heads

    def potential(self, heads: Sequence[str] | None = None, dtype: torch.dtype | None = None,
                  seed: int | None = None) -> Potential:
        """A freshly built Potential (weights from ``seed``) in ``dtype`` (default: float64 if float64_ok)."""
        torch.manual_seed(self.seed if seed is None else seed)
        model = Potential(self.architecture, self.hyperparameters, self.species, list(heads or self.heads))
        return model.to(dtype or self.exact_dtype)

    def _model(self, heads: Sequence[str] | None = None) -> Potential:
        """A cached float64 (exact_dtype) model, for checks that do not change weights."""
        key = tuple(heads or self.heads)
        if key not in self._cache:
            self._cache[key] = self.potential(key)
        return self._cache[key]

    def pick(self, names: Sequence[str]) -> list[str]:
        """``names``, with molecules holding elements outside ``species`` replaced by ones that fit."""
        fits = [n for n in MOLECULES if set(MOLECULES[n][0]) <= set(self.species)]
        if not fits:
            raise ConformanceError(f"species: none of the kit's molecules ({', '.join(MOLECULES)}) fits species "
                                   f"{self.species}; the kit needs H with C, N or O")
        chosen = [n for n in names if n in fits]
        spare = [n for n in fits if n not in chosen]
        while len(chosen) < len(names):
            chosen.append(spare.pop(0) if spare else fits[len(chosen) % len(fits)])
        return chosen

    def batch(self, names: Sequence[str] = ("water", "methane", "ammonia"), seed: int | None = None,
              dtype: torch.dtype | None = None) -> Batch:
        mols = molecules(self.pick(names), self.seed + 1 if seed is None else seed)
        return make_batch(mols, dtype or self.exact_dtype)

    def _net(self, model: Potential, batch: Batch, check: str) -> ModelOutput:
        try:
            out = model.net(batch)
        except Exception as exc:
            raise ConformanceError(f"{check}: the network raised {exc.__class__.__name__}: {exc}") from exc
        if not isinstance(out, ModelOutput):
            raise ConformanceError(f"{check}: net(batch) returned {type(out).__name__}, not kdframe.architecture.ModelOutput")
        return out

    def _energy(self, model: Potential, batch: Batch, positions: torch.Tensor | None = None) -> torch.Tensor:
        b = _with_positions(batch, batch.positions if positions is None else positions)
        with torch.no_grad():
            return model(b, forces=False)["energy"]

    def _forces(self, model: Potential, batch: Batch, check: str, create_graph: bool = False) -> dict[str, torch.Tensor]:
        try:
            return model(batch, forces=True, create_graph=create_graph)
        except RuntimeError as exc:
            if "does not require grad" in str(exc) or "not have been used in the graph" in str(exc):
                raise ConformanceError(
                    f"{check}: the energy is not differentiable in Batch.positions ({exc}); compute every "
                    f"distance from batch.positions without .detach(), .numpy() or torch.no_grad()") from exc
            raise

    # --- checks ------------------------------------------------------------------------------------
    @check
    def check_registered(self) -> None:
        """the architecture is in kdframe's registry under its ``name`` (needed by ``Potential.load`` and YAML runs),
        and unknown hyperparameter keys are rejected."""
        from .plugins import registry

        arch = self.architecture
        if not isinstance(getattr(arch, "name", None), str) or not arch.name:
            raise ConformanceError("registered: the architecture has no string `name` (what YAML writes)")
        found = registry().architectures.get(arch.name)
        if found is None or type(found) is not type(arch):
            raise ConformanceError(
                f"registered: architecture {arch.name!r} is not in kdframe's registry"
                + (f" (that name belongs to {type(found).__name__})" if found is not None else "")
                + "; Potential.load and YAML runs look architectures up there. Add "
                "[project.entry-points.kdframe] to pyproject.toml, a @hookimpl register_architectures, "
                "and pip install the package")
        if not (isinstance(arch.Hyperparameters, type) and issubclass(arch.Hyperparameters, pydantic.BaseModel)):
            raise ConformanceError("registered: `Hyperparameters` must be a pydantic.BaseModel subclass")
        try:
            arch.parse(self.hyperparameters)
        except pydantic.ValidationError as exc:
            raise ConformanceError(f"registered: the kit's hyperparameters do not validate: {exc}") from exc
        try:
            arch.parse({**self.hyperparameters, "surely_not_a_hyperparameter": 1})
        except pydantic.ValidationError:
            pass
        else:
            raise ConformanceError("registered: an unknown hyperparameter key was accepted; set "
                                   "model_config = pydantic.ConfigDict(extra='forbid') so YAML typos are errors")

    @check
    def check_output_contract(self) -> None:
        """``net(batch)`` returns a ``ModelOutput`` with energy ``(n_conf, n_heads)`` and atom energies ``(n_atoms,
        n_heads)``, floating and finite, differentiable in ``Batch.positions``; scalar regularisers; the
        batch is left unchanged; ``torch.no_grad`` gives the same energies."""
        check = "output_contract"
        for heads in ([self.heads[0]], self.heads):
            model = self._model(heads)
            batch = self.batch()
            species, positions = batch.species.clone(), batch.positions.clone()
            batch.positions.requires_grad_(True)
            out = self._net(model, batch, check)
            n_heads = len(heads)
            for name, tensor, shape in (("energy", out.energy, (batch.n_conf, n_heads)),
                                        ("atom_energies", out.atom_energies, (batch.n_atoms, n_heads))):
                if not torch.is_tensor(tensor):
                    raise ConformanceError(f"{check}: ModelOutput.{name} is {type(tensor).__name__}, not a tensor")
                if tuple(tensor.shape) != shape:
                    raise ConformanceError(f"{check}: ModelOutput.{name} has shape {tuple(tensor.shape)}, expected "
                                           f"{shape} = (n_{'conf' if name == 'energy' else 'atoms'}, n_heads) "
                                           f"for {n_heads} head(s)")
                if not tensor.is_floating_point():
                    raise ConformanceError(f"{check}: ModelOutput.{name} has dtype {tensor.dtype}, not floating point")
                if not torch.isfinite(tensor).all():
                    raise ConformanceError(f"{check}: ModelOutput.{name} has non-finite values")
            for key, value in out.regularisers.items():
                if not (torch.is_tensor(value) and value.dim() == 0 and torch.isfinite(value)):
                    raise ConformanceError(f"{check}: regulariser {key!r} must be a finite 0-dim tensor, got "
                                           f"{value if not torch.is_tensor(value) else tuple(value.shape)}")
            if not out.energy.requires_grad:
                raise ConformanceError(f"{check}: the energy does not require grad: it is detached from "
                                       "Batch.positions (and the weights); forces and training need both")
            (grad,) = torch.autograd.grad(out.energy.sum(), batch.positions, allow_unused=True)
            if grad is None or not bool(grad.abs().sum() > 0):
                raise ConformanceError(f"{check}: the energy does not depend on Batch.positions (gradient "
                                       f"{'missing' if grad is None else 'zero'}); positions were detached or copied")
            if not (torch.equal(batch.species, species) and torch.equal(batch.positions.detach(), positions)):
                raise ConformanceError(f"{check}: the network changed the batch in place (species or positions)")
            with torch.no_grad():
                quiet = self._net(model, _with_positions(batch, positions), check)
            _compare(check, "energies under torch.no_grad vs with grad", quiet.energy, out.energy, self.tol.batch,
                     _conf_where)

    @check
    def check_energy_is_sum_of_atom_energies(self) -> None:
        """the energy is the sum of the atom energies, per head and configuration."""
        check = "energy_is_sum_of_atom_energies"
        batch = self.batch(("water", "methane", "ammonia", "methanol"))
        out = self._net(self._model(), batch, check)
        _compare(check, "ModelOutput.energy vs per-configuration sum of ModelOutput.atom_energies",
                 out.energy, batch.sum_per_conf(out.atom_energies), self.tol.sum, _conf_where)

    @check
    def check_batch_round_trip(self) -> None:
        """the batch through the padded layout (or the plugin's own, see ``layout_round_trip``) and back is the same
        batch, and gives the same energies."""
        check = "batch_round_trip"
        batch = self.batch(("water", "methanol", "ammonia"))
        if self.layout_round_trip is not None:
            positions = batch.positions.detach().clone().requires_grad_(True)
            source = dataclasses.replace(batch, positions=positions)
            back = self.layout_round_trip(source)
            layout = "the plugin's layout"
            (grad,) = torch.autograd.grad(back.positions.sum(), positions, allow_unused=True)
            if grad is None or not torch.equal(grad, torch.ones_like(grad)):
                raise ConformanceError(f"{check}: positions through {layout} and back do not carry the gradient "
                                       "of every atom exactly once")
        else:
            padded = batch.to_padded()
            back = Batch.from_padded(padded.species, padded.positions)
            layout = "the padded layout"
        for name in ("species", "conf_index"):
            if not torch.equal(getattr(back, name), getattr(batch, name)):
                raise ConformanceError(f"{check}: {name} changed through {layout} and back: "
                                       f"{getattr(back, name).tolist()} vs {getattr(batch, name).tolist()}")
        if back.n_conf != batch.n_conf:
            raise ConformanceError(f"{check}: n_conf changed through {layout} and back: {back.n_conf} vs {batch.n_conf}")
        _compare(check, f"positions through {layout} and back", back.positions, batch.positions, 0.0, _atom_where(batch))
        model = self._model()
        _compare(check, f"energies of the batch rebuilt from {layout}", self._energy(model, back),
                 self._energy(model, batch), self.tol.batch, _conf_where)

    @check
    def check_batch_independence(self) -> None:
        """each configuration alone gives the same atom energies as inside a batch (the molecules of the batch all sit
        at the origin, overlapping in space, so an adapter that mixes configurations is caught), and
        reordering configurations reorders energies."""
        check = "batch_independence"
        model = self._model()
        mols = molecules(self.pick(("water", "methane", "ammonia", "methanol")), self.seed + 2)  # all overlapping at the origin
        together = self._net(model, make_batch(mols, self.exact_dtype), check)
        alone = [self._net(model, make_batch([m], self.exact_dtype), check) for m in mols]
        batch = make_batch(mols, self.exact_dtype)
        _compare(check, "atom energies of each configuration alone vs inside one batch (configurations sit on top "
                 "of each other in space: an adapter that mixes configurations differs)",
                 together.atom_energies, torch.cat([o.atom_energies for o in alone]), self.tol.batch, _atom_where(batch))
        _compare(check, "energies alone vs in a batch", together.energy, torch.cat([o.energy for o in alone]),
                 self.tol.batch, _conf_where)
        reversed_out = self._net(model, make_batch(mols[::-1], self.exact_dtype), check)
        _compare(check, "energies with the configurations in reverse order", reversed_out.energy.flip(0),
                 together.energy, self.tol.batch, _conf_where)

    def _permuted(self, seed: int):
        mols = molecules(self.pick(("methanol", "water", "methane")), self.seed + 3)
        g = torch.Generator().manual_seed(seed)
        perms = [torch.randperm(len(s), generator=g) for s, _ in mols]
        for k, p in enumerate(perms):  # never the identity (nor, for 3+ atoms, a plain reversal)
            while torch.equal(p, torch.arange(len(p))) or (len(p) > 2 and torch.equal(p, torch.arange(len(p)).flip(0))):
                p = torch.randperm(len(p), generator=g)
            perms[k] = p
        shuffled = [([s[i] for i in perm], pos[perm]) for (s, pos), perm in zip(mols, perms)]
        starts = torch.cumsum(torch.tensor([0] + [len(s) for s, _ in mols[:-1]]), 0)
        flat = torch.cat([perm + start for perm, start in zip(perms, starts)])
        return make_batch(mols, self.exact_dtype), make_batch(shuffled, self.exact_dtype), flat

    @check
    def check_atom_order(self) -> None:
        """permuting atoms inside configurations permutes atom energies the same way."""
        check = "atom_order"
        model = self._model()
        batch, shuffled, flat = self._permuted(self.seed + 4)
        original = self._net(model, batch, check).atom_energies
        permuted = self._net(model, shuffled, check).atom_energies
        _compare(check, "atom energies after permuting the atoms of each configuration (row k must be the energy "
                 "of Batch atom k)", permuted, original[flat], self.tol.batch, _atom_where(shuffled))

    @check
    def check_forces_match_finite_differences(self) -> None:
        """the core's autograd forces vs central differences (float64)."""
        check = "forces_match_finite_differences"
        model = self._model()
        batch = self.batch(("water", "ammonia"))
        self._compare_forces_with_differences(check, "core forces (autograd of the energy)", model, batch)

    def _compare_forces_with_differences(self, check: str, what: str, model: Potential, batch: Batch) -> None:
        forces = self._forces(model, _with_positions(batch, batch.positions), check)["forces"].detach()
        x0, h = batch.positions.detach(), self.tol.fd_step
        numeric = torch.zeros_like(forces)
        for a in range(batch.n_atoms):
            for k in range(3):
                step = torch.zeros_like(x0)
                step[a, k] = h
                de = self._energy(model, batch, x0 + step) - self._energy(model, batch, x0 - step)
                numeric[a, k] = -de[batch.conf_index[a]] / (2 * h)
        _compare(check, f"{what} vs central differences (step {h:g} Å)", forces, numeric, self.tol.forces,
                 _atom_where(batch))

    @check
    def check_hessian_vector_products_match_finite_differences(self) -> None:
        """the core's double-backward H·v vs differences of forces."""
        check = "hessian_vector_products_match_finite_differences"
        model = self._model()
        batch = self.batch(("water", "ammonia"))
        head = len(self.heads) - 1
        v = torch.randn(batch.positions.shape, generator=torch.Generator().manual_seed(self.seed + 5),
                        dtype=batch.positions.dtype)
        b = _with_positions(batch, batch.positions)
        force = self._forces(model, b, check, create_graph=True)["forces"][..., head]
        if not force.requires_grad:
            raise ConformanceError(f"{check}: forces taken with create_graph=True carry no graph: the network is "
                                   "not twice differentiable (a custom backward that is not itself differentiable?)")
        try:
            hv = derivatives.hessian_vector_product(force, b.positions, v, create_graph=False)
        except RuntimeError as exc:
            raise ConformanceError(f"{check}: double backward failed: the network is not twice differentiable in "
                                   "Batch.positions (a custom autograd backward that is not itself differentiable, "
                                   f"or an op without a double backward?): {exc}") from exc

        def head_forces(x: torch.Tensor) -> torch.Tensor:
            return model(_with_positions(batch, x))["forces"][..., head].detach()

        h, x0 = self.tol.fd_step, batch.positions.detach()
        numeric = -(head_forces(x0 + h * v) - head_forces(x0 - h * v)) / (2 * h)
        _compare(check, f"H·v by double backward vs differences of forces along v (head {head})", hv, numeric,
                 self.tol.hvp, _atom_where(batch))

    @check
    def check_hvp_loss_gradients_match_finite_differences(self) -> None:
        """the weight gradient of an HVP loss (third derivatives, as E-F-HVP training takes them) is non-zero and,
        along a random direction in weight space, equals central differences of the loss (float64 only): a
        backward that drops a weight's contribution is caught."""
        check = "hvp_loss_gradients_match_finite_differences"
        model = self._model()
        batch = self.batch(("water", "ammonia"))
        head = len(self.heads) - 1
        g = torch.Generator().manual_seed(self.seed + 10)
        v = torch.randn(batch.positions.shape, generator=g, dtype=torch.float64).to(batch.positions.dtype)
        weights = model.trainable_weights()
        directions = [torch.randn(w.shape, generator=g, dtype=torch.float64).to(w) for w in weights]
        norm = math.sqrt(sum(float(d.pow(2).sum()) for d in directions))
        directions = [d / norm for d in directions]

        def loss(create_graph: bool) -> torch.Tensor:
            b = _with_positions(batch, batch.positions)
            force = self._forces(model, b, check, create_graph=True)["forces"][..., head]
            return derivatives.hessian_vector_product(force, b.positions, v, create_graph).pow(2).mean()

        try:
            grads = torch.autograd.grad(loss(True), weights, allow_unused=True)
        except RuntimeError as exc:
            raise ConformanceError(f"{check}: back-propagating an HVP loss to the weights failed (E-F-HVP training "
                                   f"takes third derivatives: an op without a differentiable double backward?): "
                                   f"{exc}") from exc
        if not any(gr is not None and bool(gr.abs().sum() > 0) for gr in grads):
            raise ConformanceError(f"{check}: an HVP loss has no gradient with respect to any weight")
        if not self.float64_ok:
            return
        analytic = sum(float((gr * d).sum()) for gr, d in zip(grads, directions) if gr is not None)
        saved = [w.detach().clone() for w in weights]
        values = []
        try:
            for sign in (1.0, -1.0):
                with torch.no_grad():
                    for w, w0, d in zip(weights, saved, directions):
                        w.copy_(w0 + sign * self.tol.fd_step * d)
                values.append(float(loss(False)))
        finally:
            with torch.no_grad():
                for w, w0 in zip(weights, saved):
                    w.copy_(w0)
        numeric = (values[0] - values[1]) / (2 * self.tol.fd_step)
        scale = max(abs(numeric), 1e-12)  # relative: the loss has no natural unit
        _compare(check, "directional derivative of an HVP loss in the weights (relative) vs central differences",
                 torch.tensor(analytic / scale, dtype=torch.float64), torch.tensor(numeric / scale, dtype=torch.float64),
                 self.tol.hvp, lambda _: "the scalar")

    def _invariance(self, check: str, what: str, moved: torch.Tensor, batch: Batch) -> None:
        model = self._model()
        _compare(check, what, self._energy(model, batch, moved), self._energy(model, batch), self.tol.invariance,
                 _conf_where)

    @check
    def check_translation_invariance(self) -> None:
        """energies are unchanged by translating every atom by (3, -7.5, 12.25) Å."""
        batch = self.batch()
        shift = torch.tensor([3.0, -7.5, 12.25], dtype=batch.positions.dtype)
        self._invariance("translation_invariance", "energies after translating every atom by (3, -7.5, 12.25) Å",
                         batch.positions + shift, batch)

    @check
    def check_rotation_invariance(self) -> None:
        """energies are unchanged by a random rotation about the origin."""
        batch = self.batch()
        rotation = random_rotation(torch.Generator().manual_seed(self.seed + 6)).to(batch.positions.dtype)
        self._invariance("rotation_invariance", "energies after a random rotation about the origin",
                         batch.positions @ rotation.T, batch)

    @check
    def check_permutation_invariance(self) -> None:
        """energies are unchanged by permuting the atoms of each configuration."""
        check = "permutation_invariance"
        model = self._model()
        batch, shuffled, _ = self._permuted(self.seed + 7)
        _compare(check, "energies after permuting the atoms of each configuration", self._energy(model, shuffled),
                 self._energy(model, batch), self.tol.invariance, _conf_where)

    @check
    def check_float32_matches_float64(self) -> None:
        """the same weights in float32 (how kdframe trains) agree with float64."""
        check = "float32_matches_float64"
        if not self.float64_ok:
            raise SkipCheck("float64_ok is False")
        exact = self._model()
        single = self.potential(dtype=torch.float32)
        single.load_state_dict(exact.state_dict())  # the same weights, rounded to float32
        if model_dtype(single) != torch.float32:
            raise ConformanceError(f"{check}: Potential.to(torch.float32) left the weights in {model_dtype(single)}")
        batch = self.batch()
        out32 = self._forces(single, batch.to("cpu", torch.float32), check)
        if not torch.isfinite(out32["forces"]).all():
            raise ConformanceError(f"{check}: non-finite forces in float32")
        _compare(check, "float32 vs float64 energies with the same weights", out32["energy"],
                 self._energy(exact, batch), self.tol.float32, _conf_where)

    @check
    def check_save_load_round_trip(self, directory: str | Path | None = None) -> None:
        """``Potential.save`` then ``Potential.load`` reproduces energies, atom energies and forces."""
        check = "save_load_round_trip"
        model = self.potential(dtype=torch.float32, seed=self.seed + 8)  # as the trainer leaves it
        with torch.no_grad():
            for z in self.species:
                model.reference_energies[z] = torch.linspace(-10.0 * z, -10.0 * z - 1.0, len(model.heads))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(directory or tmp) / f"{self.name}-conformance.pt"
            model.save(path)
            try:
                loaded = Potential.load(path)
            except Exception as exc:
                raise ConformanceError(f"{check}: Potential.load failed: {exc.__class__.__name__}: {exc}") from exc
        # Potential.load builds the model in the dtype its hyperparameters ask for; the check is that the
        # weights survive, so compare in the dtype the model was saved in.
        loaded = loaded.to(model_dtype(model))
        for attr in ("heads", "species", "hyperparameters"):
            if getattr(loaded, attr) != getattr(model, attr):
                raise ConformanceError(f"{check}: {attr} changed: {getattr(loaded, attr)} vs {getattr(model, attr)}")
        if loaded.architecture.name != self.name:
            raise ConformanceError(f"{check}: loaded architecture {loaded.architecture.name!r}, saved {self.name!r}")
        batch = self.batch(dtype=torch.float32)
        a = self._forces(model, _with_positions(batch, batch.positions), check)
        b = self._forces(loaded, _with_positions(batch, batch.positions), check)
        where = {"energy": _conf_where, "atom_energies": _atom_where(batch), "forces": _atom_where(batch)}
        for key in ("energy", "atom_energies", "forces"):
            _compare(check, f"{key} of the reloaded model vs the saved one (state not saved? random buffers "
                     "that are not persistent?)", b[key], a[key], self.tol.save_load, where[key])

    @check
    def check_training_lowers_the_loss(self, steps: int = 2) -> None:
        """two Adam steps on an energy + force loss (forces with ``create_graph``, as the trainer does) lower it, and
        the force loss reaches the weights."""
        check = "training_lowers_the_loss"
        model = self.potential(dtype=torch.float32, seed=self.seed + 9)
        with torch.no_grad():  # the core's reference energies carry the atomic part, as in a real run
            model.reference_energies[:] = 0.0
            for z, e in ((1, -13.6), (6, -1030.0), (7, -1480.0), (8, -2040.0)):
                if z < model.reference_energies.shape[0]:
                    model.reference_energies[z] = e
        batch = self.batch(("water", "methane", "ammonia", "methanol"), dtype=torch.float32)
        x = batch.positions.detach().double().requires_grad_(True)
        pair = _morse(batch.species, x, batch.conf_index, batch.n_conf)
        (grad,) = torch.autograd.grad(pair.sum(), x)
        target_e = (pair + batch.sum_per_conf(model.reference_energies.double()[batch.species, 0])).detach()
        target_f = -grad
        weights = model.trainable_weights()
        if not weights:
            raise ConformanceError(f"{check}: the network has no trainable floating-point weights")
        optimizer = torch.optim.Adam(weights, lr=self.train_lr)

        def losses() -> tuple[torch.Tensor, torch.Tensor]:
            out = self._forces(model, _with_positions(batch, batch.positions), check, create_graph=True)
            e = out["energy"][:, 0] - target_e
            f = out["forces"][..., 0] - target_f
            return e.pow(2).mean().sqrt() + e.abs().mean(), f.pow(2).mean().sqrt() + f.abs().mean()

        energy_loss, force_loss = losses()

        def reaches_weights(loss: torch.Tensor, what: str) -> bool:
            if not loss.requires_grad:
                return False
            try:
                grads = torch.autograd.grad(loss, weights, retain_graph=True, allow_unused=True)
            except RuntimeError as exc:
                raise ConformanceError(f"{check}: back-propagating the {what} loss to the weights failed: {exc}") from exc
            return any(g is not None and bool(g.abs().sum() > 0) for g in grads)

        if not reaches_weights(energy_loss, "energy"):
            raise ConformanceError(f"{check}: the energy loss has no gradient with respect to any trainable weight "
                                   "(weights used through .data / .detach() or under torch.no_grad?)")
        if not reaches_weights(force_loss, "force"):
            raise ConformanceError(f"{check}: the force loss has no gradient with respect to any weight: forces are "
                                   "not differentiable in the weights (forces taken with create_graph=True must "
                                   "keep the graph; a custom autograd backward that is not itself differentiable?)")
        history = []
        loss = energy_loss + force_loss
        for step in range(steps + 1):
            if step:
                loss = sum(losses())
            history.append(float(loss.detach()))
            if not math.isfinite(history[-1]):
                raise ConformanceError(f"{check}: non-finite loss {history[-1]} at step {step}")
            if step == steps:
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            bad = [i for i, w in enumerate(weights) if w.grad is not None and not torch.isfinite(w.grad).all()]
            if bad:
                raise ConformanceError(f"{check}: non-finite gradients in {len(bad)} weight tensor(s) at step {step}")
            if not any(w.grad is not None and bool(w.grad.abs().sum() > 0) for w in weights):
                raise ConformanceError(f"{check}: no trainable weight received a gradient from the loss (weights "
                                       "used through .data / .detach() or under torch.no_grad?)")
            optimizer.step()
        if not history[-1] < history[0]:
            raise ConformanceError(f"{check}: {steps} Adam steps (lr {self.train_lr:g}) on an energy + force loss did "
                                   f"not lower it: {' -> '.join(f'{v:.6g}' for v in history)}")

    @check
    def check_heads(self) -> None:
        """with two fidelity heads the columns differ, each head has weights of its own that the other head's loss does
        not touch, and (unless ``heads_share_weights = False``) the heads share the rest of the network.
        Skipped when the architecture's ``max_heads`` is 1."""
        check = "heads"
        heads = self.heads
        if len(heads) < 2:
            raise SkipCheck(f"{self.name} allows max_heads={self.architecture.max_heads}")
        model = self._model(heads)
        batch = self.batch(("water", "methane", "ammonia", "methanol"))
        out = self._net(model, batch, check)
        gap = float((out.energy[:, 0] - out.energy[:, 1]).detach().abs().max())
        if gap < self.tol.heads_differ:
            raise ConformanceError(f"{check}: the two head columns are the same (max |E_head0 - E_head1| = {gap:.3g} "
                                   f"< {self.tol.heads_differ:g} eV): is the n_heads argument of build() ignored "
                                   "or one column copied?")
        for h in range(len(heads)):
            _compare(check, f"head {h} energy vs the sum of head {h} atom energies", out.energy[:, h],
                     batch.sum_per_conf(out.atom_energies[:, h]), self.tol.sum, _conf_where)
        weights = [w for w in model.trainable_weights()]
        grads = []
        for h in range(2):
            g = torch.autograd.grad(out.energy[:, h].sum(), weights, retain_graph=True, allow_unused=True)
            grads.append(torch.cat([(gi if gi is not None else torch.zeros_like(w)).flatten() for gi, w in zip(g, weights)]))
        used0, used1 = grads[0] != 0, grads[1] != 0
        for h, own in ((0, used0 & ~used1), (1, used1 & ~used0)):
            if not bool(own.any()):
                raise ConformanceError(f"{check}: head {h} has no weights of its own: every weight it uses also moves "
                                       f"head {1 - h}, so a loss on one fidelity cannot be fitted without changing the "
                                       "other (heads routed to the same output?)")
        shared = int((used0 & used1).sum())
        if self.heads_share_weights and shared == 0:
            raise ConformanceError(f"{check}: the heads share no weights (set heads_share_weights = False if separate "
                                   "networks per head are intended)")

    def periodic_batch(self, vacuum_along_c: bool = False, pbc: Sequence[bool] = (True, True, True)) -> Batch:
        """Water, methane and ammonia in :data:`PERIODIC_CELL` (the water partly outside it); with
        ``vacuum_along_c`` the third lattice vector is stretched to 40 Å, far beyond any cutoff."""
        mols = molecules(self.pick(("water", "methane", "ammonia")), self.seed + 9)
        cell = torch.tensor(PERIODIC_CELL, dtype=self.exact_dtype)
        centres = torch.tensor(PERIODIC_CENTRES, dtype=self.exact_dtype) @ cell
        species = [z for s, _ in mols for z in s]
        positions = torch.cat([p.to(self.exact_dtype) + c for (_, p), c in zip(mols, centres)])
        batch = make_batch([(species, positions)], self.exact_dtype)  # one configuration of three molecules
        if vacuum_along_c:
            cell[2] *= 40.0 / float(cell[2].norm())
        return dataclasses.replace(batch, cell=cell[None], pbc=torch.tensor([list(pbc)]))

    @check
    def check_periodic_images(self) -> None:
        """(architectures with ``periodic = True``): in a small triclinic cell, narrower than twice the cutoff, images
        change the energy; moving atoms by lattice vectors changes nothing; a 2x1x1 supercell has twice the
        energy; rotating atoms and cell together changes nothing; pbc (T, T, F) equals full pbc with vacuum
        along the third vector; a periodic and an open configuration in one batch give what each gives
        alone; forces match central differences. With ``periodic = False`` the core must refuse a periodic
        batch with a DataError."""
        check = "periodic_images"
        model = self._model()
        batch = self.periodic_batch()
        if not self.architecture.periodic:
            try:
                self._energy(model, batch)
            except DataError:
                return
            raise ConformanceError(f"{check}: {self.name} has periodic = False, yet a periodic batch gave energies "
                                   "instead of a DataError (a crystal silently treated as a cluster)")
        energy = self._energy(model, batch)
        atoms = self._net(model, _with_positions(batch, batch.positions), check).atom_energies
        gap = float((self._energy(model, dataclasses.replace(batch, cell=None, pbc=None)) - energy).abs().max())
        if gap < self.tol.heads_differ:
            raise ConformanceError(f"{check}: the periodic energy equals the open-boundary one (|difference| = "
                                   f"{gap:.3g} eV) in a cell narrower than the cutoff: images are ignored")
        g = torch.Generator().manual_seed(self.seed + 10)
        shifts = torch.randint(-1, 2, (batch.n_atoms, 3), generator=g).to(batch.cell.dtype) @ batch.cell[0]
        _compare(check, "energies after moving atoms by random lattice vectors", self._energy(model, batch,
                 batch.positions + shifts), energy, self.tol.invariance, _conf_where)
        rotation = random_rotation(g).to(batch.cell.dtype)
        rotated = dataclasses.replace(batch, positions=batch.positions @ rotation.T, cell=batch.cell @ rotation.T)
        _compare(check, "energies after rotating atoms and cell together", self._energy(model, rotated), energy,
                 self.tol.invariance, _conf_where)
        _compare(check, "energy of the 2x1x1 supercell vs twice the cell's", self._energy(model, _supercell(
                 batch, (2, 1, 1))), 2 * energy, self.tol.invariance, _conf_where)
        slab_batch = self.periodic_batch(vacuum_along_c=True, pbc=(True, True, False))
        slab = self._energy(model, slab_batch)
        _compare(check, "pbc (T, T, F) vs full pbc with 40 Å along the third lattice vector", slab,
                 self._energy(model, self.periodic_batch(vacuum_along_c=True)), self.tol.invariance, _conf_where)
        quarter_turn = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]], dtype=batch.cell.dtype)
        turned = dataclasses.replace(slab_batch, positions=slab_batch.positions @ quarter_turn.T,
                                     cell=slab_batch.cell @ quarter_turn.T)
        _compare(check, "slab energy after a quarter turn that lays the z axis in its periodic plane", self._energy(
                 model, turned), slab, self.tol.invariance, _conf_where)
        open_one = self.batch(("methanol",))
        mixed = dataclasses.replace(batch, species=torch.cat([batch.species, open_one.species]),
                                    positions=torch.cat([batch.positions, open_one.positions]),
                                    conf_index=torch.cat([batch.conf_index, open_one.conf_index + 1]), n_conf=2,
                                    cell=torch.cat([batch.cell, torch.zeros_like(batch.cell)]),
                                    pbc=torch.tensor([[True] * 3, [False] * 3]))
        together = self._net(model, _with_positions(mixed, mixed.positions), check)
        _compare(check, "atom energies of a periodic and an open configuration in one batch vs each alone",
                 together.atom_energies, torch.cat([atoms, self._net(model, open_one, check).atom_energies]),
                 self.tol.batch, _atom_where(mixed))
        self._compare_forces_with_differences(check, "forces in the periodic cell", model, batch)

    @check
    def check_stress(self) -> None:
        """(periodic architectures): the core's stress (autograd of the energy in a homogeneous strain of atoms and
        cell) equals central differences of the energy under each strain component, divided by the volume,
        is symmetric, and is the same for the 2x1x1 supercell (it is intensive). For every architecture,
        open and partly periodic configurations get NaN stress (no volume), never a number."""
        check = "stress"
        model = self._model()
        open_stress = model(self.batch(("water",)), forces=False, stress=True)["stress"]
        if not bool(torch.isnan(open_stress).all()):
            raise ConformanceError(f"{check}: an open configuration got stress {open_stress[0, ..., 0].tolist()} "
                                   "instead of NaN (it has no volume)")
        if not self.architecture.periodic:
            return
        slab = model(self.periodic_batch(vacuum_along_c=True, pbc=(True, True, False)), forces=False, stress=True)
        if not bool(torch.isnan(slab["stress"]).all()):
            raise ConformanceError(f"{check}: a slab (pbc T, T, F) got a stress instead of NaN (no volume)")
        batch = self.periodic_batch()
        stress = model(_with_positions(batch, batch.positions), forces=False, stress=True)["stress"][0].detach()
        volume = float(torch.linalg.det(batch.cell[0].double()).abs())
        h = self.tol.fd_step / float(batch.cell[0].norm(dim=1).max())  # a strain that moves atoms about fd_step
        numeric = torch.zeros_like(stress)
        for i in range(3):
            for j in range(3):
                strain = torch.zeros(3, 3, dtype=batch.positions.dtype)
                strain[i, j] = strain[j, i] = h if i == j else h / 2
                energies = []
                for sign in (1, -1):
                    deform = torch.eye(3, dtype=strain.dtype) + sign * strain
                    moved = dataclasses.replace(batch, positions=batch.positions @ deform, cell=batch.cell @ deform)
                    energies.append(self._energy(model, moved)[0])
                numeric[i, j] = (energies[0] - energies[1]) / (2 * h * volume)
        where = lambda index: f"component {'xyz'[index[0]]}{'xyz'[index[1]]}, head {index[2]}"  # noqa: E731
        _compare(check, "core stress (autograd in a strain of atoms and cell) vs central differences of the energy / V "
                 f"(strain step {h:g})", stress, numeric, self.tol.forces, where)
        _compare(check, "stress vs its transpose", stress, stress.transpose(0, 1), self.tol.invariance, where)
        for repeats in ((2, 1, 1), (3, 3, 3), (24, 1, 1)):  # 324 and 288 atoms: neighbour searches may change
            large = _supercell(batch, repeats)
            g = torch.Generator().manual_seed(self.seed + 11)
            moves = torch.randint(-1, 2, (large.n_atoms, 3), generator=g).to(large.cell.dtype) @ large.cell[0]
            large = dataclasses.replace(large, positions=large.positions + moves)  # atoms outside, as MD leaves them
            _compare(check, f"stress of the {'x'.join(map(str, repeats))} supercell ({large.n_atoms} atoms, some moved "
                     "by its lattice vectors) vs the cell's", model(large, forces=False, stress=True)["stress"][0],
                     stress, self.tol.forces, where)

    @check
    def check_cutoff_continuity(self) -> None:
        """an atom moved away from a molecule in steps of ``continuity_step`` (0.004 Å) from 1.5 to 10 Å, i.e.
        through every cutoff: the energy is continuous (no energy step differs from the trapezoid of the forces at
        its two ends by more than ``continuity`` and ten times the differences around it) and so are the forces (no
        force step ten times larger than the steps around it). A hard cutoff, or an envelope whose slope jumps, is
        caught."""
        check = "cutoff_continuity"
        model = self._model()
        species, base = molecules(self.pick(("water",)), self.seed + 12, distortion=0.0)[0]
        base = base.to(self.exact_dtype)
        away = base[0] - base[1:].mean(0)
        away = away / away.norm() if float(away.norm()) > 1e-6 else torch.tensor([0.0, 0.0, 1.0], dtype=base.dtype)
        h = self.tol.continuity_step
        r = torch.arange(CONTINUITY_RANGE[0], CONTINUITY_RANGE[1] + h / 2, h, dtype=self.exact_dtype)
        mover = self.species[0]
        energies, forces = [], []
        for chunk in r.split(512):
            mols = [(list(species) + [mover], torch.cat([base, (base[0] + d * away)[None]])) for d in chunk]
            out = self._forces(model, make_batch(mols, self.exact_dtype), check)
            energies.append(out["energy"].detach())
            forces.append(out["forces"].detach().reshape(len(chunk), len(species) + 1, 3, -1)[:, -1])
        energy, force = torch.cat(energies).double(), torch.cat(forces).double()  # (n, heads), (n, 3, heads)
        if not (torch.isfinite(energy).all() and torch.isfinite(force).all()):
            raise ConformanceError(f"{check}: non-finite energies or forces while moving an atom from "
                                   f"{CONTINUITY_RANGE[0]} to {CONTINUITY_RANGE[1]} Å")
        along = (force * away.double()[None, :, None]).sum(1)  # -dE/dr
        step = energy[1:] - energy[:-1]
        trapezoid = -0.5 * (along[1:] + along[:-1]) * h
        residual = (step - trapezoid).abs()  # O(h³) where the energy is smooth, the jump where it is not
        scale = max(1.0, float(energy.abs().max()))
        spike = residual - 10 * _around(residual)  # a jump is one step; steep but smooth energies spread over many
        worst = int(spike.max(dim=1).values.argmax())
        head = int(spike[worst].argmax())
        what = (f"moving atom {len(species)} (Z={mover}) away from atom 0 (Z={species[0]}) of {self.pick(('water',))[0]}"
                f" from r = {float(r[worst]):.4f} to {float(r[worst + 1]):.4f} Å (head {head})")
        if float(spike[worst, head]) > self.tol.continuity * scale:
            raise ConformanceError(
                f"{check}: the energy jumps by {float(step[worst, head]):.4g} eV {what}, where the forces account for "
                f"{float(trapezoid[worst, head]):.4g} eV (|difference| {float(residual[worst, head]):.3g} > tolerance "
                f"{self.tol.continuity:.3g} x {scale:.3g}): a hard cutoff? Pair terms must go smoothly to zero at "
                "the cutoff (e.g. a cosine envelope)")
        jump = (force[1:] - force[:-1]).norm(dim=1)  # (n - 1, heads)
        around = _around(jump)
        floor = self.tol.continuity * max(1.0, float(force.abs().max()))
        excess = jump - (10 * around + floor)
        worst = int(excess.max(dim=1).values.argmax())
        head = int(excess[worst].argmax())
        if float(excess[worst, head]) > 0:
            raise ConformanceError(
                f"{check}: the force on the moving atom jumps by {float(jump[worst, head]):.4g} eV/Å "
                f"{what.replace(f'(head {head})', '')}(head {head}), over ten times the steps around it (at most "
                f"{float(around[worst, head]):.3g} eV/Å): an envelope whose slope is not zero at the cutoff?")

    @check
    def check_species_dependence(self) -> None:
        """changing one atom's element to each other element of ``species`` changes that atom's energy and its
        configuration's energy (by more than ``heads_differ``), in every head: a network that ignores the atomic
        number (an embedding indexed by something else) is caught."""
        check = "species_dependence"
        model = self._model()
        mols = molecules(self.pick(("methanol", "water", "methane", "ammonia")), self.seed + 13)
        originals, swapped, where = [], [], []
        for a in self.species:
            found = next(((m, k) for m, (s, _) in enumerate(mols) for k, z in enumerate(s) if z == a), None)
            if found is None:
                continue
            m, k = found
            for b in self.species:
                if b != a:
                    elements, positions = mols[m]
                    originals.append(mols[m])
                    swapped.append(([b if i == k else z for i, z in enumerate(elements)], positions))
                    where.append((m, k, a, b))
        if not where:
            raise SkipCheck("only one element in species")
        before = self._net(model, make_batch(originals, self.exact_dtype), check)
        after = self._net(model, make_batch(swapped, self.exact_dtype), check)
        batch = make_batch(originals, self.exact_dtype)
        starts = torch.cumsum(batch.atoms_per_conf(), 0) - batch.atoms_per_conf()
        for c, (m, k, a, b) in enumerate(where):
            atom = int(starts[c]) + k
            for what, x, y in (("its configuration's energy", before.energy[c], after.energy[c]),
                               ("the atom's energy", before.atom_energies[atom], after.atom_energies[atom])):
                change = (x - y).detach().abs()
                if float(change.min()) < self.tol.heads_differ:
                    raise ConformanceError(
                        f"{check}: changing atom {k} of a molecule (configuration {c}) from Z={a} to Z={b} leaves "
                        f"{what} unchanged (|change| = {float(change.min()):.3g} eV < {self.tol.heads_differ:g} in head "
                        f"{int(change.argmin())}): does the network ignore the atomic number (Batch.species)?")

    @check
    def check_unknown_elements(self) -> None:
        """a configuration with an element outside ``species`` (one between two known ones, one above them all,
        and 0, which padded layouts use for "no atom") raises :class:`kdframe.errors.DataError` naming it, never
        an energy (the element silently becoming another one, or padding), nor another exception."""
        check = "unknown_elements"
        model = self._model()
        known = set(self.species)
        candidates = [z for z in range(1, max(known)) if z not in known][:1] + [max(known) + 1, 0]
        base = molecules(self.pick(("water", "methane")), self.seed + 14)
        for z in candidates:
            elements, positions = base[1]
            bad = ([z] + list(elements[1:]), positions)
            batch = make_batch([base[0], bad], self.exact_dtype)
            try:
                energy = self._energy(model, batch)
            except DataError as exc:
                if str(z) not in str(exc):
                    raise ConformanceError(f"{check}: the DataError for element {z} does not name it: {exc}") from exc
                continue
            except Exception as exc:  # noqa: BLE001 - the wrong exception is the failure reported
                raise ConformanceError(f"{check}: element {z} (outside species {self.species}) raised "
                                       f"{exc.__class__.__name__}: {exc}, not kdframe.errors.DataError") from exc
            raise ConformanceError(f"{check}: element {z} (outside species {self.species}) gave energies "
                                   f"{energy[1].tolist()} instead of a DataError")

    def awkward_molecules(self) -> dict[str, tuple[list[int], torch.Tensor]]:
        """Open configurations whose bounding box has no volume, built from the kit's species: one atom, a diatomic
        on the x axis, a linear triatomic on the z axis off the origin, a bent triatomic in the xy plane."""
        light, heavy = self.species[0], self.species[-1]
        t = lambda rows: torch.tensor(rows, dtype=self.exact_dtype)  # noqa: E731
        return {
            "a single atom": ([heavy], t([[0.3, -0.2, 0.1]])),
            "a diatomic on the x axis": ([heavy, light], t([[0.0, 0.0, 0.0], [1.13, 0.0, 0.0]])),
            "a linear triatomic on the z axis": ([light, heavy, light], t([[2.0, 1.0, -1.1], [2.0, 1.0, 0.0],
                                                                           [2.0, 1.0, 1.1]])),
            "a bent triatomic in the xy plane": ([heavy, light, light], t([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0],
                                                                           [-0.24, 0.93, 0.0]])),
        }

    @check
    def check_awkward_geometries(self) -> None:
        """a single atom, a molecule on a Cartesian axis and one in a Cartesian plane (bounding boxes without
        volume, which make a neighbour search's cell singular), alone and in one batch: finite energies, the same
        atom energies either way, forces that match central differences. With ``periodic = True`` also batched
        with a periodic cell and with a periodic box that holds an isolated atom (pbc full and (T, T, F))."""
        check = "awkward_geometries"
        model = self._model()
        awkward = self.awkward_molecules()
        mols = list(awkward.values())
        names = list(awkward)
        configs = [make_batch([m], self.exact_dtype) for m in mols]
        if self.architecture.periodic:
            light, heavy = self.species[0], self.species[-1]
            box = torch.eye(3, dtype=self.exact_dtype) * 12.0
            isolated = make_batch([([heavy, light, light, light], torch.tensor(
                [[0.5, 0.5, 0.5], [1.46, 0.5, 0.5], [0.26, 1.43, 0.5], [6.5, 6.5, 6.5]], dtype=self.exact_dtype))],
                self.exact_dtype)
            for pbc in ((True, True, True), (True, True, False)):
                configs.append(dataclasses.replace(isolated, cell=box[None], pbc=torch.tensor([list(pbc)])))
                names.append(f"a periodic box (pbc {pbc}) with an isolated atom")
            configs.append(self.periodic_batch())
            names.append("the kit's periodic cell")
        alone = []
        for name, config in zip(names, configs):
            try:
                out = self._net(model, config, check)
            except ConformanceError as exc:
                raise ConformanceError(f"{exc} (for {name})") from exc
            if not torch.isfinite(out.atom_energies).all():
                raise ConformanceError(f"{check}: non-finite atom energies for {name}")
            alone.append(out.atom_energies)
        together = _concatenate(configs)
        out = self._net(model, together, check)
        _compare(check, f"atom energies of {', '.join(names)} in one batch vs each alone", out.atom_energies,
                 torch.cat(alone), self.tol.batch, _atom_where(together))
        open_part = _concatenate(configs[:len(mols)])
        self._compare_forces_with_differences(check, "forces of the open configurations", model, open_part)
        if self.architecture.periodic:
            self._compare_forces_with_differences(check, "forces in the periodic box with an isolated atom", model,
                                                  configs[len(mols)])

    # --- running -----------------------------------------------------------------------------------
    def run_check(self, name: str, directory: str | Path | None = None) -> None:
        """Run one check (raises ConformanceError, or SkipCheck when it does not apply)."""
        if name not in _CHECKS:
            raise KeyError(f"no conformance check {name!r} (checks: {', '.join(self.CHECKS)})")
        if name == "save_load_round_trip":
            self.check_save_load_round_trip(directory)
        else:
            _CHECKS[name](self)

    def run(self, checks: Iterable[str] | None = None) -> dict[str, str | None]:
        """Run checks; returns name -> None (passed), 'skipped: ...' or the failure message."""
        results: dict[str, str | None] = {}
        for name in checks or self.CHECKS:
            try:
                self.run_check(name)
                results[name] = None
            except SkipCheck as exc:
                results[name] = f"skipped: {exc}"
            except AssertionError as exc:
                results[name] = f"FAILED: {exc}"
            except Exception as exc:  # noqa: BLE001 - a crash is a failure of that check, reported as such
                results[name] = f"FAILED: {name}: raised {exc.__class__.__name__}: {exc}"
        return results


Conformance.CHECKS = tuple(_CHECKS)
__doc__ += "\nThe checks:\n\n" + "\n".join(f"- ``{name}``: {describe(name)}" for name in Conformance.CHECKS) + "\n"


class ArchitectureConformance:
    """Base class of a plugin's conformance tests: subclass it in a ``Test...`` class and set the attributes.

    Its one test, ``test_conformance``, is parametrized over ``Conformance.CHECKS`` (``test_conformance[stress]``);
    a failure is an ``AssertionError`` that names the property and the size of the violation.
    """

    architecture: ClassVar[str | Architecture]  # registered name, or an Architecture instance
    hyperparameters: ClassVar[dict[str, Any]] = {}  # keep tiny
    species: ClassVar[Sequence[int]] = (1, 6, 7, 8)
    heads: ClassVar[Sequence[str]] = ("lo", "hi")
    float64_ok: ClassVar[bool] = True  # False: derivative checks in float32 with looser tolerances
    tolerances: ClassVar[dict[str, float]] = {}  # overrides of Tolerances fields
    train_lr: ClassVar[float] = 1e-3
    heads_share_weights: ClassVar[bool] = True
    layout_round_trip: ClassVar[Callable[[Batch], Batch] | None] = None  # Batch -> native layout -> Batch
    seed: ClassVar[int] = 0

    _conformance: ClassVar[Conformance | None] = None

    @classmethod
    def conformance(cls) -> Conformance:
        if cls.__dict__.get("_conformance") is None:
            cls._conformance = Conformance(
                cls.architecture, cls.hyperparameters, species=cls.species, heads=cls.heads,
                float64_ok=cls.float64_ok, tolerances=dict(cls.tolerances), train_lr=cls.train_lr,
                heads_share_weights=cls.heads_share_weights, layout_round_trip=cls.layout_round_trip, seed=cls.seed)
        return cls._conformance

    def pytest_generate_tests(self, metafunc: Any) -> None:
        """pytest: ``test_conformance`` runs once per check (``-k stress`` selects one)."""
        if "check" in metafunc.fixturenames:
            metafunc.parametrize("check", Conformance.CHECKS)

    def test_conformance(self, check: str, tmp_path: Path) -> None:
        self.run_check(check, tmp_path)

    @classmethod
    def run_check(cls, name: str, directory: str | Path | None = None) -> None:
        """Run one check; a check that does not apply is a pytest skip."""
        try:
            cls.conformance().run_check(name, directory)
        except SkipCheck as exc:
            import pytest

            pytest.skip(str(exc))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdframe.testing",
                                     description="Run kdframe's architecture conformance checks.")
    parser.add_argument("architecture", nargs="?", help="registered architecture name (see `kdframe plugins`)")
    parser.add_argument("--hyperparameters", default="{}", help="JSON model block, e.g. '{\"width\": 8}'")
    parser.add_argument("--float32-only", action="store_true", help="the architecture cannot run in float64")
    parser.add_argument("--check", action="append", choices=Conformance.CHECKS, help="run only these checks")
    parser.add_argument("--list", action="store_true", help="list the checks and what each one checks")
    args = parser.parse_args(argv)
    if args.list:
        for name in Conformance.CHECKS:
            print(f"{name}: {describe(name)}")
        return 0
    if not args.architecture:
        parser.error("the architecture name is required (or --list)")
    kit = Conformance(args.architecture, json.loads(args.hyperparameters), float64_ok=not args.float32_only)
    results = kit.run(args.check)
    for name, result in results.items():
        print(f"{'ok' if result is None else result.split(':')[0]:8s} {name}" + (f"\n         {result}" if result and
              result.startswith("FAILED") else ""))
    failed = sum(1 for r in results.values() if r and r.startswith("FAILED"))
    print(f"{len(results) - failed} of {len(results)} checks passed or skipped; {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
