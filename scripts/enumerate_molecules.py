#!/usr/bin/env python
"""Build data/molecules/organic_chno_enumerated.smi: every stable neutral CHNO molecule up to N heavy atoms.

The hand-made and combinatorial lists (``scripts/make_molecule_list.py``) draw molecules by functional
group. This one enumerates molecular graphs exhaustively, the way the GDB databases that ANI-1x's
training molecules came from were built: starting from C, N and O, it adds a heavy atom by a single
bond, a bond between two atoms that still carry hydrogens, or one more bond order (at most triple),
keeping every distinct graph (RDKit canonical SMILES, hydrogens implicit) up to ``--max-heavy`` atoms.
No general-purpose structure generator is on PyPI, and a breadth-first growth over canonical SMILES
is short and exact at these sizes, so it is written here.

Kept are the molecules that pass the rules of ``make_molecule_list.py`` for systematic products
(``violation`` and ``unusual``: no enols, enamines, hemiacetals or aminals; no N-N, N-O or O-O bond
outside oximes) and these strain rules, in the spirit of GDB's: no triple bond in a ring; no
cumulated double bonds (allenes, ketenes, ketenimines); no double bond inside a three- or
four-membered ring; no atom in two rings of three or four atoms; no ring of more than three heteroatoms;
no minor tautomers of amides and ureas (O-C=N) or cyanates; every molecule embeds with ETKDGv3.
Charge-separated groups (nitro) cannot arise. The extensibility molecules, their stereoisomers and
tautomers are left out as in the other lists.

Usage:  python scripts/enumerate_molecules.py [--max-heavy N] [--out PATH] [--check]
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from rdkit import Chem, rdBase

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_molecule_list import (  # noqa: E402  (a script beside this one, not a package)
    EXTENSIBILITY, ROOT, Excluded, _order, canonical, embeds, groups_of, read_smi, unusual, violation, write_or_check)

OUT = ROOT / "data" / "molecules" / "organic_chno_enumerated.smi"
MAX_HEAVY = 6
COMMAND = "python scripts/enumerate_molecules.py"
ELEMENTS = ("C", "N", "O")
_N_N = Chem.MolFromSmarts("[#7]-,=,#[#7]")
_O_O = Chem.MolFromSmarts("[#8]~[#8]")
# minor tautomers of amides and ureas (imidic acids, isoureas) and cyanic acid and its esters
_MINOR = Chem.MolFromSmarts("[OX2]-[#6]=,#[#7]")
_CUMULATED = Chem.MolFromSmarts("*=*=*")


def _edited(smiles: str, edit) -> str | None:
    """Canonical SMILES after ``edit(rwmol)`` on the Kekulé form, or None if the edit returns False or RDKit
    refuses the result."""
    mol = Chem.RWMol(Chem.MolFromSmiles(smiles))
    Chem.Kekulize(mol, clearAromaticFlags=True)
    if edit(mol) is False:
        return None
    try:
        Chem.SanitizeMol(mol)
    except Exception:  # RDKit raises several types for impossible valences and kekulisation
        return None
    return Chem.MolToSmiles(mol)


def _strained(mol: Chem.Mol) -> bool:
    """A triple bond in a ring, a double or aromatic bond inside a 3- or 4-ring, or an atom in two such rings."""
    ring_info = mol.GetRingInfo()
    for bond in mol.GetBonds():
        if not bond.IsInRing():
            continue
        if bond.GetBondType() == Chem.BondType.TRIPLE:
            return True
        if bond.GetBondType() != Chem.BondType.SINGLE and (bond.IsInRingSize(3) or bond.IsInRingSize(4)):
            return True
    small = [set(r) for r in ring_info.AtomRings() if len(r) <= 4]
    return any(len(a & b) > 0 for i, a in enumerate(small) for b in small[i + 1:])


def _prunable(smiles: str) -> bool:
    """True if no molecule grown from this one can be kept (the test holds for every supergraph)."""
    mol = Chem.MolFromSmiles(smiles)
    # N-N and O-O bonds stay once made (an N-O bond may become an oxime's C=N-OH, which is kept)
    return _strained(mol) or mol.HasSubstructMatch(_O_O) or mol.HasSubstructMatch(_N_N)


def _bond_variants(smiles: str) -> list[str]:
    """One more bond between two atoms that carry hydrogens: a new single bond or a higher order."""
    mol = Chem.MolFromSmiles(smiles)
    free = [a.GetIdx() for a in mol.GetAtoms() if a.GetTotalNumHs() > 0]
    out = []
    for k, i in enumerate(free):
        for j in free[k + 1:]:
            def raise_bond(m, i=i, j=j):
                bond = m.GetBondBetweenAtoms(i, j)  # Kekulé form: single, double or triple
                if bond is None:
                    m.AddBond(i, j, Chem.BondType.SINGLE)
                elif bond.GetBondType() == Chem.BondType.TRIPLE:
                    return False
                else:
                    bond.SetBondType(Chem.BondType.DOUBLE if bond.GetBondType() == Chem.BondType.SINGLE
                                     else Chem.BondType.TRIPLE)
            new = _edited(smiles, raise_bond)
            if new:
                out.append(new)
    return out


def _atom_variants(smiles: str) -> list[str]:
    """One more heavy atom, singly bonded to an atom that carries a hydrogen."""
    mol = Chem.MolFromSmiles(smiles)
    out = []
    for atom in mol.GetAtoms():
        if atom.GetTotalNumHs() == 0:
            continue
        for element in ELEMENTS:
            def edit(m, i=atom.GetIdx(), element=element):
                j = m.AddAtom(Chem.Atom(element))
                m.AddBond(i, j, Chem.BondType.SINGLE)
            new = _edited(smiles, edit)
            if new:
                out.append(new)
    return out


def enumerate_graphs(max_heavy: int) -> set[str]:
    """Every connected CHNO graph up to ``max_heavy`` heavy atoms that survives ``_prunable``."""
    seen: set[str] = set()
    level = {Chem.MolToSmiles(Chem.MolFromSmiles(e)) for e in ELEMENTS}
    for size in range(1, max_heavy + 1):
        frontier = sorted(level)
        closed = set(level)
        while frontier:  # close the level under added bonds and bond orders
            grown = []
            for smi in frontier:
                for new in _bond_variants(smi):
                    if new not in closed and not _prunable(new):
                        closed.add(new)
                        grown.append(new)
            frontier = grown
        seen |= closed
        if size < max_heavy:
            level = {new for smi in closed for new in _atom_variants(smi) if not _prunable(new)}
    return seen


def kept_reason(mol: Chem.Mol) -> str | None:
    """Why an enumerated graph is not kept (None if it is)."""
    why = violation(mol) or unusual(mol)
    if why:
        return why
    if mol.HasSubstructMatch(_CUMULATED):
        return "cumulated double bonds"
    if mol.HasSubstructMatch(_MINOR):
        return "an imidic acid, isourea or cyanate (O-C=N, O-C#N)"
    if _strained(mol):
        return "strained ring"
    if any(sum(mol.GetAtomWithIdx(i).GetSymbol() != "C" for i in ring) > 3 for ring in mol.GetRingInfo().AtomRings()):
        return "a ring of more than three heteroatoms"
    return None


def build(max_heavy: int = MAX_HEAVY, embed: bool = True) -> str:
    """The text of the list (deterministic for one RDKit version)."""
    excluded = Excluded(read_smi(EXTENSIBILITY))
    kept, dropped_excluded, dropped_embed = [], [], []
    rejected = Counter()
    for smi in sorted(enumerate_graphs(max_heavy), key=_order):
        mol = Chem.MolFromSmiles(smi)
        why = kept_reason(mol)
        if why:
            rejected[why] += 1
            continue
        can = canonical(mol)
        hit = excluded.match(mol)
        if hit:
            dropped_excluded.append(f"{can} (= {hit})")
        elif embed and not embeds(can):
            dropped_embed.append(can)
        else:
            kept.append(can)
    kept = sorted(set(kept), key=lambda s: (Chem.MolFromSmiles(s).GetNumHeavyAtoms(), _order(s)))
    heavy = Counter(Chem.MolFromSmiles(s).GetNumHeavyAtoms() for s in kept)
    groups = Counter(g for s in kept for g in groups_of(Chem.MolFromSmiles(s)))
    made_by = COMMAND + (f" --max-heavy {max_heavy}" if max_heavy != MAX_HEAVY else "")
    lines = [
        f"# Molecule list for sampling (kdframe data sample --smiles-file): every stable neutral CHNO molecule with 1-{max_heavy}"
        " heavy atoms (name SMILES)",
        f"# Made by: {made_by}   (RDKit {rdBase.rdkitVersion}); deterministic, no download.",
        "# Assembly: exhaustive growth of molecular graphs from C, N, O (an atom, a bond or a bond order at a time),",
        "#   GDB-style; kept as in make_molecule_list.py's systematic products (no enols/enamines, hemiacetals/aminals,",
        "#   N-N, N-O, O-O bonds outside oximes) and free of strain (no ring triple bonds, cumulated double bonds, double",
        "#   bonds inside 3-/4-rings, atoms in two 3-/4-rings, rings of over 3 heteroatoms); no O-C=N or O-C#N (minor",
        "#   tautomers of amides and ureas, cyanates); ETKDGv3 embeds (seed 42); no charge-separated groups.",
        f"# Molecules: {len(kept)}",
        "# Heavy atoms: " + ", ".join(f"{k}: {heavy[k]}" for k in sorted(heavy)),
        "# Molecules per functional group (make_molecule_list.py's SMARTS; a molecule counts in every group it has):",
    ]
    items = [f"{k} {v}" for k, v in sorted(groups.items())]
    lines += ["#   " + ", ".join(items[i:i + 7]) for i in range(0, len(items), 7)]
    lines += [
        "# Graphs not kept: " + "; ".join(f"{why}: {n}" for why, n in sorted(rejected.items())),
        f"# Excluded as extensibility molecules or their tautomers: {len(dropped_excluded)}"
        + (": " + "; ".join(sorted(dropped_excluded)) if dropped_excluded else ""),
        f"# Dropped, no ETKDG embedding: {len(dropped_embed)}" + (": " + "; ".join(dropped_embed) if dropped_embed else ""),
    ]
    lines += [f"enumerated_{i + 1:05d} {s}" for i, s in enumerate(kept)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-heavy", type=int, default=MAX_HEAVY, metavar="N", help=f"largest heavy-atom count (default {MAX_HEAVY})")
    ap.add_argument("--out", type=Path, help=f"default: {OUT.relative_to(ROOT)} for N = {MAX_HEAVY}; required otherwise")
    ap.add_argument("--check", action="store_true", help="exit 1 if the file differs from what would be written")
    args = ap.parse_args(argv)
    if not 1 <= args.max_heavy <= 7:
        ap.error(f"--max-heavy must be 1-7 (7: 12,978 molecules in 2 min; each atom more multiplies them about fivefold),"
                 f" got {args.max_heavy}")
    if args.out is None:
        if args.max_heavy != MAX_HEAVY:
            ap.error(f"--max-heavy {args.max_heavy} needs --out (the shipped list is N = {MAX_HEAVY})")
        args.out = OUT
    return write_or_check(build(args.max_heavy), args.out, args.check)


if __name__ == "__main__":
    sys.exit(main())
