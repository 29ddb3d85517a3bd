"""Non-equilibrium geometries from SMILES: RDKit conformers, xTB optimisation, normal-mode sampling and xTB MD.

For each molecule: RDKit (ETKDG + MMFF) embeds several conformers, each is optimised with the
``xtb`` labeler (looked up in the labeler registry) through ASE, duplicates are dropped by xTB
energy; then geometries are drawn by

* normal-mode sampling: the classical harmonic Boltzmann distribution at temperature T on the
  xTB Hessian (mode amplitude ~ N(0, kT/ω²); frequencies below 100 cm⁻¹ are raised to
  100 cm⁻¹ so floppy torsions do not explode), and
* short Langevin MD with xTB at temperature T (ASE), taking frames after a short warm-up.

A geometry is rejected when two atoms are closer than ``MIN_DISTANCE`` (0.7 Å) or when its
covalent bond graph (bond if d < 1.25·(r_i + r_j), ASE covalent radii) differs from the
RDKit molecule's, i.e. bonds broke or formed; rejected draws are redrawn.
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms, units
from ase.data import covalent_radii

from .errors import ConfigError, DataError
from .labeler import Labeler, LabelerCalculator, LabelError, get_labeler

MIN_DISTANCE = 0.7  # Å
BOND_SCALE = 1.25
MIN_WAVENUMBER = 100.0  # cm^-1


@dataclass
class SamplingSettings:
    """How many geometries of each kind to draw per molecule."""

    conformers: int = 4  # RDKit embeddings (before xTB optimisation and de-duplication)
    max_conformers: int = 4  # optimised conformers kept (lowest xTB energies)
    normal_modes: int = 24
    nms_temperatures: tuple[float, ...] = (300.0, 600.0, 1000.0)
    md_frames: int = 12
    md_temperatures: tuple[float, ...] = (500.0, 1000.0)
    md_warmup_steps: int = 40
    md_stride: int = 10
    md_timestep_fs: float = 0.5
    include_optimized: bool = True
    seed: int = 0
    method: str = "xtb"

    def __post_init__(self) -> None:
        """Counts and temperatures checked before any work (RDKit and xTB fail on them with tracebacks)."""
        from .errors import ConfigError

        at_least = {"conformers": 1, "max_conformers": 1, "normal_modes": 0, "md_frames": 0}
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ConfigError(f"--{name.replace('_', '-')}", f"{getattr(self, name)} (valid: {low}, {low + 1}, ...)")
        for name in ("nms_temperatures", "md_temperatures"):
            if not all(t > 0 for t in getattr(self, name)):
                raise ConfigError(f"--{name.replace('_', '-')}", f"{list(getattr(self, name))} (valid: temperatures > 0 K)")


@dataclass
class SampledMolecule:
    name: str
    smiles: str
    atomic_numbers: np.ndarray
    coordinates: np.ndarray  # (n_conf, n_atoms, 3) Å
    origins: list[str] = field(default_factory=list)  # e.g. "opt:c0", "nms:600K:c1", "md:1000K:c0"


def embed_conformers(smiles: str, n: int, seed: int) -> tuple[np.ndarray, list[np.ndarray], object]:
    """RDKit ETKDG conformers (MMFF-relaxed, with hydrogens): (atomic numbers, list of positions, mol)."""
    try:
        from rdkit import Chem, RDLogger
        from rdkit.Chem import AllChem
    except ImportError as exc:  # pragma: no cover - rdkit comes with kdframe-qc
        raise ConfigError("kdframe data sample", "needs RDKit (pip install kdframe-qc or rdkit)") from exc
    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise DataError(f"invalid SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = 0xC0FFEE + seed  # RDKit gives identical conformers for randomSeed=0
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n, params=params))
    if not ids:
        raise DataError(f"RDKit could not embed {smiles!r}")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=2000)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    return z, [np.array(mol.GetConformer(i).GetPositions(), dtype=np.float64) for i in ids], mol


def bond_graph(numbers: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Boolean adjacency: d_ij < BOND_SCALE·(r_i + r_j)."""
    d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    r = covalent_radii[numbers]
    adj = d < BOND_SCALE * (r[:, None] + r[None])
    np.fill_diagonal(adj, False)
    return adj


def acceptable(numbers: np.ndarray, positions: np.ndarray, reference_bonds: np.ndarray) -> bool:
    """No two atoms closer than MIN_DISTANCE Å and the same bond graph as the reference."""
    d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    return bool(d.min() >= MIN_DISTANCE and np.array_equal(bond_graph(numbers, positions), reference_bonds))


def optimize(labeler: Labeler, numbers: np.ndarray, positions: np.ndarray, fmax: float = 0.005) -> tuple[np.ndarray, float]:
    """xTB-optimised positions (BFGS to fmax eV/Å) and energy in Hartree."""
    from ase.optimize import BFGS

    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.calc = LabelerCalculator(labeler)
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=1000)
    return atoms.positions.copy(), atoms.get_potential_energy() / units.Hartree


def normal_modes(labeler: Labeler, numbers: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vibrational ω² (eV/(Å²·amu)) and Cartesian displacement vectors M^-1/2·L (columns), rigid modes removed."""
    masses = Atoms(numbers=numbers).get_masses()
    hess = labeler.hessian(numbers, positions) * units.Hartree  # eV/Å²
    inv_sqrt_m = np.repeat(masses, 3) ** -0.5
    w2, vecs = np.linalg.eigh(hess * inv_sqrt_m[:, None] * inv_sqrt_m[None])
    n_rigid = 5 if _is_linear(positions) else 6
    keep = np.argsort(np.abs(w2))[n_rigid:]
    keep = keep[np.argsort(w2[keep])]
    return w2[keep], vecs[:, keep] * inv_sqrt_m[:, None]


def _is_linear(positions: np.ndarray) -> bool:
    centered = positions - positions.mean(0)
    return len(positions) < 3 or np.linalg.svd(centered, compute_uv=False)[1] < 1e-3


def nms_sample(w2: np.ndarray, modes: np.ndarray, positions: np.ndarray, temperature: float,
               rng: np.random.Generator) -> np.ndarray:
    """One draw from the classical harmonic Boltzmann distribution at ``temperature`` K."""
    # ω in cm^-1 from ω² in eV/(Å²·amu): ħω = ħ·sqrt(ω²·eV/(Å²·amu))
    w2_min = (MIN_WAVENUMBER / _WAVENUMBER_PER_SQRT_W2) ** 2
    w2 = np.maximum(w2, w2_min)
    q = rng.normal(0.0, np.sqrt(units.kB * temperature / w2))
    return positions + (modes @ q).reshape(positions.shape)


# cm^-1 per sqrt(eV/(Å²·amu)): ω[s^-1] = sqrt(w2 * eV / (Å² amu)); ν̃ = ω / (2π c)
_WAVENUMBER_PER_SQRT_W2 = float(np.sqrt(units._e / (1e-20 * units._amu)) / (2 * np.pi * units._c * 100))


def md_frames(labeler: Labeler, numbers: np.ndarray, positions: np.ndarray, temperature: float, n: int,
              settings: SamplingSettings, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` frames of Langevin MD at ``temperature`` K, every ``md_stride`` steps after a warm-up."""
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.calc = LabelerCalculator(labeler)
    with warnings.catch_warnings():  # ASE >= 3.28 deprecations; kept so the bundled data regenerate identically
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning))
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
        Stationary(atoms)
        ZeroRotation(atoms)
        dyn = Langevin(atoms, settings.md_timestep_fs * units.fs, temperature_K=temperature,
                       friction=0.02 / units.fs, rng=rng)
    dyn.run(settings.md_warmup_steps)
    frames = []
    for _ in range(n):
        dyn.run(settings.md_stride)
        frames.append(atoms.positions.copy())
    return frames


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def sample_molecule(name: str, smiles: str, settings: SamplingSettings, labeler: Labeler | None = None) -> SampledMolecule:
    """Conformers and non-equilibrium geometries for one molecule (see the module docstring)."""
    labeler = labeler or get_labeler(settings.method)
    rng = np.random.default_rng([settings.seed, *smiles.encode()])
    numbers, starts, _ = embed_conformers(smiles, settings.conformers, settings.seed)
    reference = bond_graph(numbers, starts[0])
    optimized: list[tuple[float, np.ndarray]] = []
    for start in starts:
        pos, energy = optimize(labeler, numbers, start)
        if not np.array_equal(bond_graph(numbers, pos), reference):
            continue  # optimisation rearranged the molecule
        if all(abs(energy - e) > 2e-5 for e, _ in optimized):  # 2e-5 Ha ≈ 0.01 kcal/mol: same conformer
            optimized.append((energy, pos))
    if not optimized:
        raise DataError(f"{name}: no conformer of {smiles!r} survived xTB optimisation")
    optimized.sort(key=lambda item: item[0])
    optimized = optimized[: settings.max_conformers]

    coords: list[np.ndarray] = []
    origins: list[str] = []
    if settings.include_optimized:
        for c, (_, pos) in enumerate(optimized):
            coords.append(pos)
            origins.append(f"opt:c{c}")
    slots = [(c, t) for c in range(len(optimized)) for t in settings.nms_temperatures]
    if settings.normal_modes and slots:
        modes = [normal_modes(labeler, numbers, pos) for _, pos in optimized]
        for (c, t), count in zip(slots, _split(settings.normal_modes, len(slots))):
            w2, vecs = modes[c]
            for _ in range(count):
                for _attempt in range(100):
                    pos = nms_sample(w2, vecs, optimized[c][1], t, rng)
                    if acceptable(numbers, pos, reference):
                        coords.append(pos)
                        origins.append(f"nms:{t:g}K:c{c}")
                        break
    slots = [(c, t) for c in range(len(optimized)) for t in settings.md_temperatures]
    if settings.md_frames and slots:
        for (c, t), count in zip(slots, _split(settings.md_frames, len(slots))):
            if count:
                for pos in md_frames(labeler, numbers, optimized[c][1], t, count, settings, rng):
                    if acceptable(numbers, pos, reference):
                        coords.append(pos)
                        origins.append(f"md:{t:g}K:c{c}")
    return SampledMolecule(name, smiles, numbers, np.stack(coords), origins)


def sample_molecules(molecules: Sequence[tuple[str, str]], settings: SamplingSettings, labeler: Labeler,
                     workers: int = 1) -> Iterator[tuple[str, SampledMolecule | str]]:
    """(name, its sample, or why it was skipped) for each ``(name, SMILES)``, in order. ``workers`` > 1: sampled in
    that many spawned processes of one thread each, with the same results (each molecule's sampling is seeded by the
    seed and its SMILES); a new molecule starts whenever any finishes, at most ``4 * workers`` ahead of the one
    yielded next. A worker that dies (killed, out of memory) ends the run with a DataError."""
    if workers <= 1 or len(molecules) <= 1:
        for name, smiles in molecules:
            yield name, _sample_or_reason(name, smiles, settings, labeler)
        return
    from .labelling import init_worker, one_thread_children

    with one_thread_children():  # the workers are spawned on demand, in the loop
        yield from _sample_in_pool(molecules, settings, workers, ProcessPoolExecutor(
            min(workers, len(molecules)), mp_context=multiprocessing.get_context("spawn"), initializer=init_worker,
            initargs=(labeler, os.getpid())))


def _sample_in_pool(molecules: Sequence[tuple[str, str]], settings: SamplingSettings, workers: int,
                    pool: ProcessPoolExecutor) -> Iterator[tuple[str, SampledMolecule | str]]:
    running: dict = {}  # future -> index in molecules
    finished: dict[int, SampledMolecule | str] = {}
    submitted = yielded = 0
    try:
        while yielded < len(molecules):
            while submitted < len(molecules) and len(running) < workers and submitted - yielded < 4 * workers:
                running[pool.submit(_sample_in_worker, *molecules[submitted], settings)] = submitted
                submitted += 1
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                index = running.pop(future)
                try:
                    finished[index] = future.result()
                except BrokenProcessPool:
                    raise DataError(f"{molecules[index][0]}: a sampling process ended unexpectedly (killed, out of "
                                    "memory); the molecules finished are kept: add --append to carry on") from None
            while yielded in finished:
                yield molecules[yielded][0], finished.pop(yielded)
                yielded += 1
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # an interrupt does not wait for molecules in flight


def _sample_or_reason(name: str, smiles: str, settings: SamplingSettings, labeler: Labeler) -> SampledMolecule | str:
    """The molecule's sample, or why it cannot be sampled (RDKit cannot embed it, xTB fails on it, ...): one
    molecule, not hours of work."""
    try:
        return sample_molecule(name, smiles, settings, labeler)
    except (DataError, LabelError) as exc:
        return str(exc).removeprefix(f"{name}: ")
    except Exception as exc:  # noqa: BLE001 - e.g. tblite's own errors on elements it lacks: named and skipped
        return f"{type(exc).__name__}: {exc}"


def _sample_in_worker(name: str, smiles: str, settings: SamplingSettings) -> SampledMolecule | str:
    from .labelling import worker_labeler

    return _sample_or_reason(name, smiles, settings, worker_labeler())
