"""Teacher-free configurations at scale (``kdframe data generate``): no quantum chemistry, a teacher labels later.

Per molecule of a SMILES list (``name SMILES``), with a random stream derived from ``--seed`` and the molecule's
name only (so a molecule's configurations do not depend on the list's order, on chunking or on resuming):

* ``conf``: RDKit ETKDGv3 conformers, MMFF-relaxed (UFF where MMFF lacks parameters);
* ``rattle:<a>``: a conformer with Gaussian displacements of root-mean-square length ``a`` Å per atom
  (amplitudes cycled, 0.05-0.25 Å by default; redrawn when the sanity check fails);
* ``torsion:<b>:<delta>``: the dihedral of rotatable bond ``b`` (RDKit's rotatable-bond SMARTS, methyl rotors
  included) turned by ``delta`` degrees from the conformer's own, over an even grid, then MMFF-relaxed with that
  dihedral held (``--no-torsion-relax``: rigid rotation).

Across molecules (random streams from ``--seed`` and the item's index; molecules drawn from the embedded ones,
sorted by name, each as one of its ``conf`` geometries):

* ``cluster:<s>:<f>``: clusters of s = 2-4 molecules in random orientations; each added molecule approaches the
  cluster along a random direction until its closest pair is ``f`` times the sum of the van der Waals radii; f
  scans from near contact (1.1) down to 0.75 with the orientations fixed, so students see the repulsive wall
  (and never two atoms closer than ``MIN_DISTANCE``);
* ``box:<density>``: cubic periodic boxes of a mixture of 1-3 molecules at a liquid density drawn in
  0.8-1.1 g/cm³ (the cell is sized from the molecules' masses, so the density is exact), filled by random
  insertion with random orientations, each intermolecular pair (also through the periodic images) at least
  ``box_contact`` (0.7) times the sum of the van der Waals radii (lowered step by step to 0.55 of that when
  insertion keeps failing, never to bonding distance; then other molecules are drawn at the same density),
  optionally rattled. Molecules are kept whole (centres of mass inside the cell); the ``box:`` name lists them.

Rattles of the largest amplitudes break a bond of larger molecules often: after ``RATTLE_DRAWS`` draws that
rattle is left out (about a quarter of those at 0.25 Å on the shipped list), so counts are upper bounds.

Every configuration passes :func:`check`: no two atoms (periodic images included) closer than 0.7 Å, every
bond of each molecule's graph present and no other pair within bonding distance, except the intermolecular
pairs of the deliberately close clusters.

Resumable: the work is split into chunks (molecule chunks, then cluster and box chunks), each written as a packed
shard in ``OUTPUT.parts/`` and recorded in ``OUTPUT.parts/journal.jsonl`` once whole; a rerun of the same command
skips recorded chunks, then everything is merged into OUTPUT (atomic rename) and the parts are removed. A
molecule that cannot be used (invalid SMILES, element outside ``elements``, no embedding, no sane conformer) is
reported by name on stderr and in ``OUTPUT.skipped.txt``, and skipped. The same command gives a byte-identical
OUTPUT, interrupted or not, with any ``workers``. Measured on the shipped 751-molecule list, 1 core: about 330
configurations per second (``--conformers 2 --rattle 8 --torsions 4 --clusters 500 --boxes 10``: 10,509 in 33 s).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase.data import atomic_masses, chemical_symbols, covalent_radii, vdw_radii

from .errors import DataError
from .io import append_journal, file_sha256, journal_records

MIN_DISTANCE = 0.7  # Å, the hard floor between any two atoms (as kdframe.sampling)
BOND_SCALE = 1.25  # bonded when d < BOND_SCALE·(r_i + r_j), ASE covalent radii (as kdframe.sampling)
AMU_PER_A3_IN_G_CM3 = 1.66053906660  # 1 amu/Å³ in g/cm³
RATTLE_DRAWS = 20
KILL_ENV = "KDFRAME_GENERATE_KILL_AT"  # tests: SIGKILL this process while it writes the chunk of this number


@dataclass(frozen=True)
class GenerateSettings:
    """What ``kdframe data generate`` makes; counts per molecule except clusters and boxes (in all)."""

    conformers: int = 2
    rattle: int = 8
    rattle_amplitudes: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25)  # Å, RMS displacement per atom
    torsions: int = 4
    torsion_relax: bool = True
    clusters: int = 0  # configurations in all
    cluster_sizes: tuple[int, ...] = (2, 3, 4)
    cluster_scan: int = 4  # configurations per orientation, contact ratio from cluster_contact[0] to [1]
    cluster_contact: tuple[float, float] = (1.1, 0.75)
    boxes: int = 0
    box_atoms: int = 200
    densities: tuple[float, float] = (0.8, 1.1)  # g/cm³
    box_species: int = 3  # at most this many different molecules per box
    box_contact: float = 0.7  # intermolecular pairs >= this times the vdW sum at insertion (lowered when stuck)
    box_rattle: float = 0.0  # Å RMS per atom, 0: none
    elements: tuple[int, ...] = (1, 6, 7, 8)
    seed: int = 0
    chunk_molecules: int = 16
    chunk_clusters: int = 25  # orientations (of cluster_scan configurations) per chunk
    chunk_boxes: int = 2


class Skip(Exception):
    """A molecule (or cluster, box) that cannot be made; reported by name, never fatal."""


@dataclass
class Configurations:
    """Configurations of one composition: ``positions`` (k, n, 3) Å, one origin each; a cell for boxes."""

    name: str
    species: np.ndarray
    positions: np.ndarray
    origins: list[str]
    cell: np.ndarray | None = None  # (k, 3, 3)
    molecule_of: np.ndarray | None = None  # (n,) which molecule each atom belongs to (as made; not in the file)
    bonds: np.ndarray | None = None  # (m, 2) the bond graph (as made; not in the file)


@dataclass
class Monomer:
    name: str
    species: np.ndarray
    conformers: list[np.ndarray]
    bonds: np.ndarray  # (m, 2) i < j

    @property
    def mass(self) -> float:
        return float(atomic_masses[self.species].sum())


# ----------------------------------------------------------------------------- random streams


def stream_seed(seed: int, *parts: object) -> int:
    """A 64-bit seed from the run's seed and an item's identity (a molecule name, ("cluster", i), ...)."""
    digest = hashlib.sha256(json.dumps([int(seed), *map(str, parts)]).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def rng_for(seed: int, *parts: object) -> np.random.Generator:
    return np.random.default_rng(stream_seed(seed, *parts))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed rotation matrix (from a random unit quaternion)."""
    w, x, y, z = (q := rng.normal(size=4)) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def unit_vector(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


# ----------------------------------------------------------------------------- sanity check


def bond_threshold(species: np.ndarray) -> np.ndarray:
    """(n, n) Å: pairs closer than this are bonded."""
    r = covalent_radii[species]
    return BOND_SCALE * (r[:, None] + r[None])


def bonds_from_geometry(species: np.ndarray, positions: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    i, j = np.nonzero(np.triu(d < bond_threshold(species), 1))
    return np.stack([i, j], axis=1)


def check(species: np.ndarray, positions: np.ndarray, molecule_of: np.ndarray, bonds: np.ndarray,
          cell: np.ndarray | None = None, contacts: bool = False) -> str | None:
    """Why a configuration is not sane, or None.

    No two atoms (periodic images of ``cell``, fully periodic, included, an atom's own images too) closer than
    ``MIN_DISTANCE``; every bond of ``bonds`` (global atom indices, molecules whole) within bonding distance;
    no other pair of atoms of one molecule within bonding distance; no pair of atoms of different molecules (or
    an atom and an image) within bonding distance unless ``contacts`` (deliberately close clusters).
    """
    species = np.asarray(species)
    r = covalent_radii[species]
    if len(bonds):
        d = np.linalg.norm(positions[bonds[:, 0]] - positions[bonds[:, 1]], axis=1)
        broken = d >= BOND_SCALE * (r[bonds[:, 0]] + r[bonds[:, 1]])
        if broken.any():
            k = int(np.argmax(broken))
            return f"bond {bonds[k, 0]}-{bonds[k, 1]} broken ({d[k]:.2f} Å)"
    if cell is None:
        i, j = np.triu_indices(len(species), 1)
        d = np.linalg.norm(positions[i] - positions[j], axis=1)
        image = np.zeros(len(i), dtype=bool)
    else:
        from .cells import neighbour_pairs

        cutoff = max(MIN_DISTANCE, float(BOND_SCALE * 2 * r.max()))
        i, j, shift = neighbour_pairs(positions, cutoff, cell, np.ones(3, dtype=bool))
        image = shift.any(axis=1)
        keep = (i < j) | ((i == j) & image)
        i, j, shift, image = i[keep], j[keep], shift[keep], image[keep]
        d = np.linalg.norm(positions[j] - positions[i] + shift @ cell, axis=1)
    if len(d) and d.min() < MIN_DISTANCE:
        k = int(np.argmin(d))
        return f"atoms {i[k]} and {j[k]} {d[k]:.2f} Å apart (< {MIN_DISTANCE} Å)"
    close = d < BOND_SCALE * (r[i] + r[j])
    same = (molecule_of[i] == molecule_of[j]) & ~image
    n = len(species)
    expected = np.isin(np.minimum(i, j) * n + np.maximum(i, j), bonds[:, 0] * n + bonds[:, 1]) & same
    extra = close & same & ~expected
    if extra.any():
        k = int(np.argmax(extra))
        return f"atoms {i[k]} and {j[k]} of one molecule bonded ({d[k]:.2f} Å), not in its graph"
    if not contacts and (close & ~same).any():
        k = int(np.argmax(close & ~same))
        return f"atoms {i[k]} and {j[k]} of different molecules (or images) bonded ({d[k]:.2f} Å)"
    return None


# ----------------------------------------------------------------------------- molecules


def _rdkit():
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")
    return Chem, AllChem


def prepare(smiles: str, elements: Sequence[int]):
    """The RDKit molecule with hydrogens, or :class:`Skip` with the reason."""
    Chem, _ = _rdkit()
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise Skip(f"invalid SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    outside = sorted({a.GetAtomicNum() for a in mol.GetAtoms()} - set(elements))
    if outside:
        raise Skip(f"element(s) {', '.join(chemical_symbols[z] for z in outside)} outside --elements")
    return mol


def _force_field(mol, conf_id: int):
    from rdkit.Chem import AllChem

    if AllChem.MMFFHasAllMoleculeParams(mol):
        return AllChem.MMFFGetMoleculeForceField(mol, AllChem.MMFFGetMoleculeProperties(mol), confId=conf_id), "mmff"
    if AllChem.UFFHasAllMoleculeParams(mol):
        return AllChem.UFFGetMoleculeForceField(mol, confId=conf_id), "uff"
    return None, None


def embed(mol, n: int, seed: int) -> list[int]:
    """ETKDGv3 conformers (random coordinates as a fallback), force-field relaxed; their ids."""
    _, AllChem = _rdkit()
    params = AllChem.ETKDGv3()
    params.randomSeed = seed % (2**31 - 1) + 1  # 0 would give every molecule the same stream
    params.numThreads = 1
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n, params=params))
    if not ids:
        params.useRandomCoords = True
        ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n, params=params))
    for conf_id in ids:
        ff, _ = _force_field(mol, conf_id)
        if ff is not None:
            ff.Minimize(maxIts=2000)
    return ids


def rotatable_bonds(mol) -> list[tuple[int, int, int, int]]:
    """(i, j, k, l) dihedrals about each rotatable bond j-k (RDKit's SMARTS), heavy neighbours preferred."""
    from rdkit.Chem.Lipinski import RotatableBondSmarts

    out, seen = [], set()
    for j, k in mol.GetSubstructMatches(RotatableBondSmarts):
        if (min(j, k), max(j, k)) in seen:
            continue
        seen.add((min(j, k), max(j, k)))

        def end(a: int, b: int) -> int:
            nbrs = [x.GetIdx() for x in mol.GetAtomWithIdx(a).GetNeighbors() if x.GetIdx() != b]
            return min(nbrs, key=lambda x: (mol.GetAtomWithIdx(x).GetAtomicNum() == 1, x))

        out.append((end(j, k), j, k, end(k, j)))
    return sorted(out, key=lambda t: (t[1], t[2]))


def molecule_configurations(name: str, smiles: str, settings: GenerateSettings) -> Configurations:
    """Conformers, rattled and torsion-scanned configurations of one molecule (:class:`Skip` when it cannot)."""
    from rdkit.Chem import rdMolTransforms

    seed = stream_seed(settings.seed, "molecule", name)
    rng = np.random.default_rng(seed)
    mol = prepare(smiles, settings.elements)
    species = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    bonds = np.array(sorted((min(b.GetBeginAtomIdx(), b.GetEndAtomIdx()), max(b.GetBeginAtomIdx(), b.GetEndAtomIdx()))
                            for b in mol.GetBonds()), dtype=np.int64).reshape(-1, 2)
    one = np.zeros(len(species), dtype=np.int64)
    ids = embed(mol, max(settings.conformers, 1), seed)
    if not ids:
        raise Skip("RDKit could not embed it (ETKDGv3, also from random coordinates)")
    good, reasons = [], []
    for conf_id in ids:
        pos = np.array(mol.GetConformer(conf_id).GetPositions(), dtype=np.float64)
        reason = check(species, pos, one, bonds)
        (reasons.append(reason) if reason else good.append((conf_id, pos)))
    if not good:
        raise Skip(f"no sane conformer ({reasons[0]})")
    positions, origins = [], []
    for _, pos in good[:settings.conformers]:
        positions.append(pos)
        origins.append("conf")
    for r in range(settings.rattle):
        amplitude = settings.rattle_amplitudes[r % len(settings.rattle_amplitudes)]
        base = good[r % len(good)][1]
        for _ in range(RATTLE_DRAWS):
            pos = base + rng.normal(0.0, amplitude / np.sqrt(3.0), base.shape)
            if check(species, pos, one, bonds) is None:
                positions.append(pos)
                origins.append(f"rattle:{amplitude:g}")
                break
    dihedrals = rotatable_bonds(mol) if settings.torsions else []
    for t in range(settings.torsions if dihedrals else 0):
        b = t % len(dihedrals)
        count = len(range(b, settings.torsions, len(dihedrals)))
        delta = int(round(360.0 * (t // len(dihedrals) + 1) / (count + 1)))
        conf_id = good[t % len(good)][0]
        conf = mol.GetConformer(conf_id)
        saved = conf.GetPositions()
        i, j, k, l = dihedrals[b]
        angle = rdMolTransforms.GetDihedralDeg(conf, i, j, k, l) + delta
        rdMolTransforms.SetDihedralDeg(conf, i, j, k, l, angle)
        if settings.torsion_relax:
            ff, kind = _force_field(mol, conf_id)
            if ff is not None:
                if kind == "mmff":
                    ff.MMFFAddTorsionConstraint(i, j, k, l, False, angle, angle, 1e4)
                else:
                    ff.UFFAddTorsionConstraint(i, j, k, l, False, angle, angle, 1e4)
                ff.Minimize(maxIts=500)
        pos = np.array(conf.GetPositions(), dtype=np.float64)
        for a, xyz in enumerate(saved):  # the conformer itself stays as embedded
            conf.SetAtomPosition(a, xyz.tolist())
        if check(species, pos, one, bonds) is None:
            positions.append(pos)
            origins.append(f"torsion:{b}:{delta}")
    return Configurations(name, species, np.stack(positions), origins, molecule_of=one, bonds=bonds)


# ----------------------------------------------------------------------------- clusters


def _min_ratio(a: np.ndarray, ra: np.ndarray, b: np.ndarray, rb: np.ndarray) -> float:
    d = np.linalg.norm(a[:, None] - b[None], axis=-1)
    return float((d / (ra[:, None] + rb[None])).min())


def approach(placed: np.ndarray, r_placed: np.ndarray, mol: np.ndarray, r_mol: np.ndarray, direction: np.ndarray,
             ratio: float) -> np.ndarray:
    """``mol`` (centred) moved along ``direction`` from far away until its closest pair to ``placed`` is ``ratio``
    times the sum of the vdW radii (from outside: the first such distance)."""
    centre = placed.mean(axis=0)
    t_far = (np.linalg.norm(placed - centre, axis=1).max() + np.linalg.norm(mol, axis=1).max()
             + 2 * (r_placed.max() + r_mol.max()) * max(ratio, 1.0) + 1.0)
    # no pair distance changes faster than t: a step of (ratio now - ratio) x the smallest vdW sum cannot pass
    # the first contact (bar the 0.05 Å minimum step); bisection then finds it
    smallest = float(r_placed.min() + r_mol.min())
    t_out = t = t_far
    while t > 0:
        now = _min_ratio(centre + t * direction + mol, r_mol, placed, r_placed)
        if now <= ratio:
            break
        t_out = t
        t = t - max(0.05, (now - ratio) * smallest)
    t_in = max(t, 0.0)
    for _ in range(24):
        mid = 0.5 * (t_in + t_out)
        if _min_ratio(centre + mid * direction + mol, r_mol, placed, r_placed) <= ratio:
            t_in = mid
        else:
            t_out = mid
    return centre + t_out * direction + mol


def cluster_configurations(index: int, monomers: Sequence[Monomer], settings: GenerateSettings) -> Configurations:
    """The contact scan of orientation ``index``: ``cluster_scan`` clusters of the same molecules and orientations."""
    rng = rng_for(settings.seed, "cluster", index)
    size = int(rng.choice(settings.cluster_sizes))
    chosen = [monomers[int(m)] for m in rng.choice(len(monomers), size)]
    geometries = []
    for m in chosen:
        xyz = m.conformers[int(rng.integers(len(m.conformers)))]
        geometries.append((xyz - xyz.mean(axis=0)) @ random_rotation(rng).T)
    directions = [unit_vector(rng) for _ in chosen]
    species = np.concatenate([m.species for m in chosen])
    offsets = np.cumsum([0] + [len(m.species) for m in chosen])
    molecule_of = np.repeat(np.arange(size), [len(m.species) for m in chosen])
    bonds = np.concatenate([m.bonds + o for m, o in zip(chosen, offsets)])
    radii = [vdw_radii[m.species] for m in chosen]
    ratios = np.round(np.linspace(*settings.cluster_contact, settings.cluster_scan), 2)
    positions, origins = [], []
    for ratio in ratios:
        placed, r_placed = geometries[0], radii[0]
        for m in range(1, size):
            moved = approach(placed, r_placed, geometries[m], radii[m], directions[m], ratio)
            placed, r_placed = np.concatenate([placed, moved]), np.concatenate([r_placed, radii[m]])
        if check(species, placed, molecule_of, bonds, contacts=True) is None:
            positions.append(placed)
            origins.append(f"cluster:{size}:{ratio:g}")
    if not positions:
        raise Skip(f"cluster {index}: no sane configuration")
    return Configurations("+".join(sorted(m.name for m in chosen)), species, np.stack(positions), origins,
                          molecule_of=molecule_of, bonds=bonds)


# ----------------------------------------------------------------------------- boxes


def random_rotations(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, 3, 3) uniformly distributed rotation matrices."""
    q = rng.normal(size=(count, 4))
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    return np.stack([np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
                     np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
                     np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1)], 1)


_SHIFTS = np.array([(a, b, c) for a in (-1, 0, 1) for b in (-1, 0, 1) for c in (-1, 0, 1) if (a, b, c) != (0, 0, 0)],
                   dtype=np.float64)
INSERT_BATCH, INSERT_ROUNDS = 16, 48  # candidate poses tried at once, and how many times


def insert(base: np.ndarray, need: np.ndarray, placed: np.ndarray, need_placed: np.ndarray, length: float,
           rng: np.random.Generator) -> np.ndarray | None:
    """``base`` (centred) at a random orientation and position in the cubic box of side ``length`` where every
    pair with ``placed`` (minimum image) and with its own images is at least the sum of the two atoms' ``need``;
    None when no candidate fits. Candidates are drawn in batches; the first that fits is taken."""
    self_need = need[:, None] + need[None]
    diameter = float(np.linalg.norm(base[:, None] - base[None], axis=-1).max())
    images = length - diameter < self_need.max()  # otherwise no atom can come close to an image of its molecule
    pair_need = need[:, None] + need_placed[None]
    for _ in range(INSERT_ROUNDS):
        rotations = random_rotations(rng, INSERT_BATCH)
        candidates = np.einsum("nj,bij->bni", base, rotations) + rng.uniform(0, length, (INSERT_BATCH, 1, 3))
        fits = np.ones(INSERT_BATCH, dtype=bool)
        if len(placed):
            d = candidates[:, :, None] - placed[None, None]
            d -= length * np.round(d / length)
            fits = ~(np.einsum("bnpk,bnpk->bnp", d, d) < pair_need[None] ** 2).any(axis=(1, 2))
        if images:
            diff = candidates[:, :, None] - candidates[:, None]
            for shift in _SHIFTS:
                fits &= ~(np.linalg.norm(diff + shift * length, axis=-1) < self_need[None]).any(axis=(1, 2))
        if fits.any():
            return candidates[int(np.argmax(fits))]
    return None


def box_configuration(index: int, monomers: Sequence[Monomer], settings: GenerateSettings) -> Configurations:
    """One periodic box of a mixture at a random liquid density (see the module docstring).

    Random insertion, largest molecules first; when it keeps failing, the required contact is lowered step by
    step (never to bonding distance nor below the hard floor), then other molecules are drawn at the same
    density (dense liquids are rich in N and O; compressed alkanes do not pack).
    """
    rng = rng_for(settings.seed, "box", index)
    density = round(float(rng.uniform(*settings.densities)), 2)
    last = "no attempt"
    for _composition in range(4):
        kinds = [monomers[int(m)] for m in rng.choice(len(monomers), min(len(monomers), int(rng.integers(
            1, settings.box_species + 1))), replace=False)]
        members: list[Monomer] = []
        total = 0
        while total < settings.box_atoms:
            m = kinds[int(rng.integers(len(kinds)))]
            if total >= 0.85 * settings.box_atoms and total + len(m.species) > 1.15 * settings.box_atoms:
                break
            members.append(m)
            total += len(m.species)
        members.sort(key=lambda m: -len(m.species))  # the largest first
        length = (sum(m.mass for m in members) * AMU_PER_A3_IN_G_CM3 / density) ** (1.0 / 3.0)
        species = np.concatenate([m.species for m in members])
        molecule_of = np.repeat(np.arange(len(members)), [len(m.species) for m in members])
        offsets = np.cumsum([0] + [len(m.species) for m in members])
        bonds = np.concatenate([m.bonds + o for m, o in zip(members, offsets)])
        names = ", ".join(sorted({m.name for m in members}))
        for contact in (settings.box_contact * f for f in (1.0, 0.85, 0.7, 0.55)):
            for _restart in range(2):
                placed, need_placed = np.zeros((0, 3)), np.zeros(0)
                for m in members:
                    need = np.maximum.reduce([contact * vdw_radii[m.species], covalent_radii[m.species] * BOND_SCALE,
                                              np.full(len(m.species), MIN_DISTANCE / 2)])
                    base = m.conformers[int(rng.integers(len(m.conformers)))]
                    new = insert(base - base.mean(axis=0), need, placed, need_placed, length, rng)
                    if new is None:
                        break
                    placed, need_placed = np.concatenate([placed, new]), np.concatenate([need_placed, need])
                else:
                    cell = np.eye(3) * length
                    positions = placed
                    if settings.box_rattle > 0:
                        for _ in range(RATTLE_DRAWS):
                            trial = placed + rng.normal(0.0, settings.box_rattle / np.sqrt(3.0), placed.shape)
                            if check(species, trial, molecule_of, bonds, cell) is None:
                                positions = trial
                                break
                    reason = check(species, positions, molecule_of, bonds, cell)
                    if reason is None:
                        return Configurations("box:" + "+".join(sorted({m.name for m in members})), species,
                                              positions[None], [f"box:{density:.2f}"], cell[None],
                                              molecule_of=molecule_of, bonds=bonds)
                    last = f"{names}: {reason}"
                    continue
                last = f"{names}: random insertion failed at contact {contact:.2f}"
    raise Skip(f"box {index} ({density} g/cm3): {last}")


# ----------------------------------------------------------------------------- chunks, journal, merge


@dataclass
class Summary:
    configurations: int = 0
    chunks_done: int = 0
    chunks_skipped: int = 0  # already finished in an earlier run
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    seconds: float = 0.0
    output: Path | None = None


def parts_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def report_path(output: Path) -> Path:
    return output.with_name(output.name + ".skipped.txt")


def _read_journal(path: Path) -> dict[str, dict]:
    return {entry["chunk"]: entry for entry in journal_records(path)}


def _write_shard(path: Path, items: Sequence[Configurations], chunk_number: int) -> None:
    from .data.packed import PackedWriter

    with PackedWriter(path, {}, source="generate") as writer:
        for c in items:
            writer.add(c.name, c.species, c.positions, {}, cell=c.cell, origin=c.origins)
        if os.environ.get(KILL_ENV) == str(chunk_number):
            os.kill(os.getpid(), signal.SIGKILL)


def _read_shard(path: Path) -> list[Configurations]:
    """A shard's configurations, grouped back into runs of one molecule and one size."""
    import h5py

    with h5py.File(path, "r") as f:
        ptr, molecule = f["atom_ptr"][()], f["molecule"][()]
        names = [s.decode() if isinstance(s, bytes) else s for s in f["molecule_names"][()]]
        species, positions = f["species"][()].astype(np.int64), f["positions"][()]
        table = [s.decode() if isinstance(s, bytes) else s for s in f["origins"][()]] if "origins" in f else []
        origin = f["origin"][()] if "origin" in f else np.zeros(len(molecule), dtype=np.int64)
        cell = f["cell"][()] if "cell" in f else None
        pbc = f["pbc"][()] if "pbc" in f else np.zeros((len(molecule), 3), dtype=bool)
    out: list[Configurations] = []
    start = 0
    n_atoms = np.diff(ptr)
    for c in range(1, len(molecule) + 1):
        if c < len(molecule) and molecule[c] == molecule[start] and n_atoms[c] == n_atoms[start] \
                and pbc[c].any() == pbc[start].any():
            continue
        k, n = c - start, int(n_atoms[start])
        atoms = slice(int(ptr[start]), int(ptr[c]))
        out.append(Configurations(names[molecule[start]], species[int(ptr[start]):int(ptr[start]) + n],
                                  positions[atoms].reshape(k, n, 3), [table[o] for o in origin[start:c]] if table else
                                  [""] * k, cell[start:c] if cell is not None and pbc[start].any() else None))
        start = c
    return out


def monomer(c: Configurations) -> Monomer | None:
    """The molecule of ``c`` with its ``conf`` geometries (None without any); bonds from the first."""
    confs = [p for p, o in zip(c.positions, c.origins) if o == "conf"]
    return Monomer(c.name, c.species, confs, bonds_from_geometry(c.species, confs[0])) if confs else None


def _monomers(shards: Sequence[Path]) -> list[Monomer]:
    """The embedded molecules (their ``conf`` geometries), sorted by name."""
    found: dict[str, Monomer] = {}
    for path in shards:
        for c in _read_shard(path):
            m = monomer(c)
            if m is not None:
                found.setdefault(c.name, Monomer(c.name, c.species, [], m.bonds)).conformers.extend(m.conformers)
    return [found[name] for name in sorted(found)]


def _chunk_job(chunk: str, kind: str, items: list, settings: GenerateSettings, monomers: list[Monomer], parts: Path,
               number: int) -> dict:
    """Make one chunk and write its shard; its journal entry (also in a worker process)."""
    made: list[Configurations] = []
    skipped: list[tuple[str, str]] = []
    for item in items:
        try:
            if kind == "molecules":
                name, smiles = item
                made.append(molecule_configurations(name, smiles, settings))
            elif kind == "clusters":
                c = cluster_configurations(item, monomers, settings)
                keep = min(len(c.positions), settings.clusters - item * settings.cluster_scan)
                c.positions, c.origins = c.positions[:keep], c.origins[:keep]
                made.append(c)
            else:
                made.append(box_configuration(item, monomers, settings))
        except Skip as exc:
            skipped.append((item[0], f"{item[1]}: {exc}") if kind == "molecules" else (f"{kind[:-1]} {item}", str(exc)))
        except Exception as exc:  # RDKit or numerical trouble with one item: reported, never fatal
            what = f"{item[1]}: " if kind == "molecules" else ""
            skipped.append((item[0] if kind == "molecules" else f"{kind[:-1]} {item}",
                            f"{what}{type(exc).__name__}: {exc}"))
    path = parts / f"{chunk}.h5"
    _write_shard(path, made, number)
    return {"chunk": chunk, "sha256": file_sha256(path), "configurations": sum(len(c.positions) for c in made),
            "skipped": skipped}


def _settings_record(settings: GenerateSettings, pairs: Sequence[tuple[str, str]]) -> dict:
    from .data.packed import FORMAT

    return {"settings": json.loads(json.dumps(asdict(settings))), "format": FORMAT,
            "molecules": hashlib.sha256(json.dumps([list(p) for p in pairs]).encode()).hexdigest()}


def generate(output: str | os.PathLike, pairs: Sequence[tuple[str, str]], settings: GenerateSettings,
             force: bool = False, keep_parts: bool = False, workers: int = 1,
             log: Callable[[str], None] | None = None) -> Summary:
    """Configurations of ``pairs`` ((name, SMILES)) into the packed file ``output`` (see the module docstring).

    ``workers`` > 1: chunks made in that many processes; the output is the same (per-item random streams).
    """
    from .data.packed import PackedWriter

    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    started = time.perf_counter()
    output = Path(output)
    parts = parts_dir(output)
    record = _settings_record(settings, pairs)
    settings_file = parts / "settings.json"
    if parts.is_dir() and settings_file.is_file():
        previous = json.loads(settings_file.read_text())
        if previous != record:
            if not force:
                raise DataError(f"{parts}: holds an unfinished run with other settings or molecules (valid: the same "
                                "command to resume it, or --force to discard it)")
            shutil.rmtree(parts)
    elif output.exists() and not force:
        raise DataError(f"{output}: exists (valid: another path, or --force to replace it)")
    if output.is_dir():
        raise DataError(f"{output}: is a directory (valid: a file path for the packed file)")
    parts.mkdir(parents=True, exist_ok=True)
    if not settings_file.is_file():
        tmp = settings_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, settings_file)
    journal_file = parts / "journal.jsonl"
    done = _read_journal(journal_file)
    summary = Summary(output=output)

    def run(jobs: list[tuple[str, str, list, int]], monomers: list[Monomer]) -> None:
        """Make the chunks not finished yet (in ``workers`` processes), journal each once its shard is whole."""
        todo = []
        for chunk, kind, items, number in jobs:
            entry, path = done.get(chunk), parts / f"{chunk}.h5"
            if entry and path.is_file() and file_sha256(path) == entry["sha256"]:
                summary.chunks_skipped += 1
                summary.skipped += [tuple(x) for x in entry["skipped"]]
            else:
                todo.append((chunk, kind, items, number))

        def record_entry(entry: dict) -> None:
            for name, reason in entry["skipped"]:
                log(f"skipped {name}: {reason}")
            append_journal(journal_file, entry)
            done[entry["chunk"]] = entry
            summary.chunks_done += 1
            summary.skipped += [tuple(x) for x in entry["skipped"]]
            log(f"{entry['chunk']}: {entry['configurations']} configurations "
                f"({summary.chunks_done + summary.chunks_skipped}/{n_chunks} chunks, {time.perf_counter() - started:.1f} s)")

        if workers <= 1 or len(todo) <= 1:
            for chunk, kind, items, number in todo:
                record_entry(_chunk_job(chunk, kind, items, settings, monomers, parts, number))
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_chunk_job, chunk, kind, items, settings, monomers, parts, number)
                       for chunk, kind, items, number in todo]
            for future in as_completed(futures):
                record_entry(future.result())

    n_mol_chunks = -(-len(pairs) // settings.chunk_molecules)
    # clusters: orientations of cluster_scan configurations each; the last one cut to the requested total
    n_orient = -(-settings.clusters // settings.cluster_scan) if settings.clusters else 0
    n_cluster_chunks = -(-n_orient // settings.chunk_clusters)
    n_box_chunks = -(-settings.boxes // settings.chunk_boxes)
    n_chunks = n_mol_chunks + n_cluster_chunks + n_box_chunks
    size = settings.chunk_molecules
    run([(f"molecules-{c:05d}", "molecules", list(pairs[c * size:(c + 1) * size]), c + 1)
         for c in range(n_mol_chunks)], [])
    mol_shards = [parts / f"molecules-{c:05d}.h5" for c in range(n_mol_chunks)]
    monomers = _monomers(mol_shards) if settings.clusters or settings.boxes else []
    if (settings.clusters or settings.boxes) and not monomers:
        raise DataError("no molecule could be embedded: no clusters or boxes can be made")
    size = settings.chunk_clusters
    jobs = [(f"clusters-{c:05d}", "clusters", list(range(c * size, min((c + 1) * size, n_orient))), n_mol_chunks + c + 1)
            for c in range(n_cluster_chunks)]
    size = settings.chunk_boxes
    jobs += [(f"boxes-{c:05d}", "boxes", list(range(c * size, min((c + 1) * size, settings.boxes))),
              n_mol_chunks + n_cluster_chunks + c + 1) for c in range(n_box_chunks)]
    run(jobs, monomers)

    chunks = ([f"molecules-{c:05d}" for c in range(n_mol_chunks)] + [f"clusters-{c:05d}" for c in range(n_cluster_chunks)]
              + [f"boxes-{c:05d}" for c in range(n_box_chunks)])
    smiles = dict(pairs)
    with PackedWriter(output, {}, source=output.stem, attrs={
            "generate.settings": json.dumps(record), "generate.skipped": json.dumps(summary.skipped),
            "generate.smiles": json.dumps(smiles)}) as writer:
        for chunk in chunks:
            for c in _read_shard(parts / f"{chunk}.h5"):
                writer.add(c.name, c.species, c.positions, {}, cell=c.cell, origin=c.origins)
                summary.configurations += len(c.positions)
        report = report_path(output)  # written before the output appears
        tmp = report.with_name(f".{report.name}.tmp")
        tmp.write_text("".join(f"{name}\t{reason}\n" for name, reason in summary.skipped))
        os.replace(tmp, report)
    if not keep_parts:
        shutil.rmtree(parts)
    summary.seconds = time.perf_counter() - started
    return summary
