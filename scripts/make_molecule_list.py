#!/usr/bin/env python
"""Build data/molecules/organic_chno.smi: neutral CHNO molecules (1-8 heavy atoms) for sampling.

The list is assembled here, deterministically, without any download:

1. the molecules of ``data/train_pool.smi`` (kept, with their names);
2. a curated list of named textbook molecules (``CURATED`` below: solvents, cyclic ethers,
   lactones, lactams, ureas, heteroaromatics, amino acids, ...);
3. systematic products: small carbon skeletons (all alkanes up to 8 C, ring skeletons,
   alkenes/alkynes derived from them) become substituents R (alkyl, cycloalkyl, alkenyl, allyl,
   alkynyl, propargyl, aryl), which are joined with RDKit ``molzip`` into functional-group
   templates (``[*:1]O``, ``[*:1]C(=O)O[*:2]``, ``[*:1]N([*:2])[*:3]``, ...); aromatic and
   heteroaromatic cores get one or two substituents from a fixed list (no OH on five-membered
   rings: hydroxy-furans, -pyrroles and -azoles are minor tautomers). Heteroatoms bond only
   to sp3 or aromatic carbons that carry no other heteroatom (no enols, ynols, hemiacetals,
   aminals), and no N-N, N-O or O-O bond outside nitro and oxime groups (``unusual``). From each group's candidates a quota is drawn round-robin over heavy-atom counts
   (small molecules first), in an order fixed by the SHA-1 of the canonical SMILES.

Every molecule must sanitise in RDKit; contain only C, H, N, O; have 1-8 heavy atoms; net
charge 0; no radicals; no isotopes; no formal charges except the charge-separated nitro group
``[N+](=O)[O-]`` (nitroalkanes, nitroarenes, nitramines, nitrate esters: the conventional
representation of a neutral group); and embed in 3D with ETKDGv3 (seed 42). Duplicates
(canonical SMILES without stereo) are dropped, and so is every molecule of
``data/extensibility.smi`` with its stereoisomers and tautomers (compared as RDKit canonical
tautomers without stereo), so that set keeps testing molecules the student never saw.

``--quota-scale K`` multiplies every group's quota (capped by its candidates: there are only so many alkanes
and substituted benzenes up to 8 heavy atoms). ``data/molecules/organic_chno_large.smi`` is K = 10, 3,714
molecules: the same chemistry with many more of the larger molecules, for students that must carry what they
learn to molecules they never saw. It holds every molecule of the K = 1 list, but systematic names are numbered
within each list, so the same name may mean another molecule there: compare the two lists by SMILES.

Usage:  python scripts/make_molecule_list.py [--quota-scale K] [--out PATH] [--check]
        (--out defaults to organic_chno.smi for K = 1 and organic_chno_large.smi for K = 10)
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import re
import sys
from collections import Counter
from pathlib import Path

from rdkit import Chem, RDLogger, rdBase
from rdkit.Chem import AllChem, rdMolDescriptors
from rdkit.Chem.MolStandardize import rdMolStandardize

RDLogger.DisableLog("rdApp.*")

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "data" / "molecules" / "organic_chno.smi"
LARGE = ROOT / "data" / "molecules" / "organic_chno_large.smi"
LARGE_QUOTA_SCALE = 10
SHIPPED = {1: OUT, LARGE_QUOTA_SCALE: LARGE}  # quota scale -> the shipped list it writes
TRAIN_POOL = ROOT / "data" / "train_pool.smi"
EXTENSIBILITY = ROOT / "data" / "extensibility.smi"
COMMAND = "python scripts/make_molecule_list.py"
MAX_HEAVY = 8
SEED = 42
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_+-]*$")

# --------------------------------------------------------------------------- curated molecules
# (name, SMILES); names lower case, ',' written as '_' to stay filesystem-safe.
CURATED: list[tuple[str, str]] = [
    # alcohols, diols
    ("2-butanol", "CCC(C)O"), ("isobutanol", "CC(C)CO"), ("tert-butanol", "CC(C)(C)O"),
    ("1-pentanol", "CCCCCO"), ("1-hexanol", "CCCCCCO"), ("cyclopentanol", "OC1CCCC1"),
    ("cyclohexanol", "OC1CCCCC1"), ("allyl_alcohol", "C=CCO"), ("propargyl_alcohol", "C#CCO"),
    ("benzyl_alcohol", "OCc1ccccc1"), ("ethylene_glycol", "OCCO"), ("glycerol", "OCC(O)CO"),
    ("1_2-propanediol", "CC(O)CO"), ("1_3-propanediol", "OCCCO"), ("1_4-butanediol", "OCCCCO"),
    ("pinacol", "CC(C)(O)C(C)(C)O"),
    # ethers
    ("tetrahydrofuran", "C1CCOC1"), ("tetrahydropyran", "C1CCOCC1"), ("1_4-dioxane", "C1COCCO1"),
    ("1_3-dioxolane", "C1COCO1"), ("oxetane", "C1COC1"), ("oxepane", "C1CCCOCC1"),
    ("anisole", "COc1ccccc1"), ("dimethoxymethane", "COCOC"), ("1_2-dimethoxyethane", "COCCOC"),
    ("methyl_tert-butyl_ether", "COC(C)(C)C"), ("diisopropyl_ether", "CC(C)OC(C)C"),
    ("propylene_oxide", "CC1CO1"), ("1_3-dioxane", "C1COCOC1"), ("trioxane", "C1OCOCO1"),
    ("2-methyltetrahydrofuran", "CC1CCCO1"),
    # aldehydes, ketones
    ("propanal", "CCC=O"), ("isobutyraldehyde", "CC(C)C=O"), ("pivalaldehyde", "CC(C)(C)C=O"),
    ("acrolein", "C=CC=O"), ("crotonaldehyde", "CC=CC=O"), ("benzaldehyde", "O=Cc1ccccc1"),
    ("glyoxal", "O=CC=O"), ("methylglyoxal", "CC(=O)C=O"), ("2-butanone", "CCC(C)=O"),
    ("2-pentanone", "CCCC(C)=O"), ("3-pentanone", "CCC(=O)CC"), ("methyl_vinyl_ketone", "C=CC(C)=O"),
    ("biacetyl", "CC(=O)C(C)=O"), ("acetylacetone", "CC(=O)CC(C)=O"), ("cyclobutanone", "O=C1CCC1"),
    ("cyclopentanone", "O=C1CCCC1"), ("cyclohexanone", "O=C1CCCCC1"), ("2-cyclohexenone", "O=C1C=CCCC1"),
    ("hydroxyacetone", "CC(=O)CO"), ("mesityl_oxide", "CC(C)=CC(C)=O"), ("ketene", "C=C=O"),
    ("1_4-benzoquinone", "O=C1C=CC(=O)C=C1"),
    # carboxylic acids
    ("butanoic_acid", "CCCC(=O)O"), ("isobutyric_acid", "CC(C)C(=O)O"), ("pivalic_acid", "CC(C)(C)C(=O)O"),
    ("acrylic_acid", "C=CC(=O)O"), ("methacrylic_acid", "C=C(C)C(=O)O"), ("propiolic_acid", "C#CC(=O)O"),
    ("oxalic_acid", "O=C(O)C(=O)O"), ("malonic_acid", "O=C(O)CC(=O)O"), ("succinic_acid", "O=C(O)CCC(=O)O"),
    ("fumaric_acid", "O=C(O)C=CC(=O)O"), ("glycolic_acid", "O=C(O)CO"), ("lactic_acid", "CC(O)C(=O)O"),
    ("pyruvic_acid", "CC(=O)C(=O)O"), ("glyoxylic_acid", "O=CC(=O)O"),
    ("cyclopropanecarboxylic_acid", "O=C(O)C1CC1"), ("pentanoic_acid", "CCCCC(=O)O"),
    ("methoxyacetic_acid", "COCC(=O)O"), ("carbonic_acid", "O=C(O)O"),
    # esters, lactones, carbonates, anhydrides
    ("ethyl_formate", "CCOC=O"), ("methyl_acetate", "COC(C)=O"), ("ethyl_acetate", "CCOC(C)=O"),
    ("vinyl_acetate", "C=COC(C)=O"), ("methyl_acrylate", "C=CC(=O)OC"), ("methyl_propanoate", "CCC(=O)OC"),
    ("isopropyl_acetate", "CC(=O)OC(C)C"), ("methyl_methacrylate", "C=C(C)C(=O)OC"),
    ("gamma-butyrolactone", "O=C1CCCO1"), ("beta-propiolactone", "O=C1CCO1"),
    ("delta-valerolactone", "O=C1CCCCO1"), ("dimethyl_carbonate", "COC(=O)OC"),
    ("ethylene_carbonate", "O=C1OCCO1"), ("propylene_carbonate", "CC1COC(=O)O1"),
    ("dimethyl_oxalate", "COC(=O)C(=O)OC"), ("methyl_glycolate", "COC(=O)CO"),
    ("acetic_anhydride", "CC(=O)OC(C)=O"), ("maleic_anhydride", "O=C1C=CC(=O)O1"),
    ("succinic_anhydride", "O=C1CCC(=O)O1"),
    # amines
    ("dimethylamine", "CNC"), ("trimethylamine", "CN(C)C"), ("diethylamine", "CCNCC"),
    ("triethylamine", "CCN(CC)CC"), ("propylamine", "CCCN"), ("isopropylamine", "CC(C)N"),
    ("butylamine", "CCCCN"), ("tert-butylamine", "CC(C)(C)N"), ("azetidine", "C1CNC1"),
    ("pyrrolidine", "C1CCNC1"), ("piperidine", "C1CCNCC1"), ("morpholine", "C1COCCN1"),
    ("piperazine", "C1CNCCN1"), ("azepane", "C1CCCNCC1"), ("n-methylpiperidine", "CN1CCCCC1"),
    ("n-methylmorpholine", "CN1CCOCC1"), ("n-methylpyrrolidine", "CN1CCCC1"), ("quinuclidine", "C1CN2CCC1CC2"),
    ("dabco", "C1CN2CCN1CC2"), ("aniline", "Nc1ccccc1"), ("benzylamine", "NCc1ccccc1"),
    ("cyclohexylamine", "NC1CCCCC1"), ("cyclopropylamine", "NC1CC1"), ("ethylenediamine", "NCCN"),
    ("ethanolamine", "NCCO"), ("n-methylaniline", "CNc1ccccc1"), ("allylamine", "C=CCN"),
    ("propargylamine", "C#CCN"), ("diisopropylamine", "CC(C)NC(C)C"), ("1_3-diaminopropane", "NCCCN"),
    ("n_n-dimethylethanolamine", "CN(C)CCO"), ("diethanolamine", "OCCNCCO"),
    # amides, lactams, ureas, carbamates, imides
    ("n-methylformamide", "CNC=O"), ("n_n-dimethylformamide", "CN(C)C=O"),
    ("n_n-dimethylacetamide", "CC(=O)N(C)C"), ("propanamide", "CCC(N)=O"), ("acrylamide", "C=CC(N)=O"),
    ("n-ethylacetamide", "CCNC(C)=O"), ("2-azetidinone", "O=C1CCN1"), ("2-pyrrolidinone", "O=C1CCCN1"),
    ("n-methyl-2-pyrrolidone", "CN1CCCC1=O"), ("2-piperidinone", "O=C1CCCCN1"),
    ("caprolactam", "O=C1CCCCCN1"), ("methylurea", "CNC(N)=O"), ("n_n-prime-dimethylurea", "CNC(=O)NC"),
    ("tetramethylurea", "CN(C)C(=O)N(C)C"), ("biuret", "NC(=O)NC(N)=O"), ("oxamide", "NC(=O)C(N)=O"),
    ("methyl_carbamate", "COC(N)=O"), ("ethyl_carbamate", "CCOC(N)=O"), ("succinimide", "O=C1CCC(=O)N1"),
    ("maleimide", "O=C1C=CC(=O)N1"), ("hydantoin", "O=C1CNC(=O)N1"), ("2-imidazolidinone", "O=C1NCCN1"),
    ("2-oxazolidinone", "O=C1NCCO1"), ("glycinamide", "NCC(N)=O"), ("n-formylglycine", "O=CNCC(=O)O"),
    ("acetohydroxamic_acid", "CC(=O)NO"), ("semicarbazide", "NNC(N)=O"), ("formylhydrazine", "NNC=O"),
    # nitriles
    ("propionitrile", "CCC#N"), ("butyronitrile", "CCCC#N"), ("isobutyronitrile", "CC(C)C#N"),
    ("pivalonitrile", "CC(C)(C)C#N"), ("acrylonitrile", "C=CC#N"), ("malononitrile", "N#CCC#N"),
    ("succinonitrile", "N#CCCC#N"), ("benzonitrile", "N#Cc1ccccc1"), ("glycolonitrile", "N#CCO"),
    ("aminoacetonitrile", "NCC#N"), ("cyanamide", "N#CN"), ("dimethylcyanamide", "CN(C)C#N"),
    ("3-hydroxypropionitrile", "N#CCCO"), ("methoxyacetonitrile", "COCC#N"), ("cyanoacetylene", "C#CC#N"),
    ("cyanoacetic_acid", "N#CCC(=O)O"), ("cyanoacetamide", "N#CCC(N)=O"), ("cyanogen", "N#CC#N"),
    ("methyl_cyanoformate", "COC(=O)C#N"), ("cyclopropanecarbonitrile", "N#CC1CC1"),
    # nitro compounds, nitrate esters, nitramines
    ("nitroethane", "CC[N+](=O)[O-]"), ("1-nitropropane", "CCC[N+](=O)[O-]"),
    ("2-nitropropane", "CC(C)[N+](=O)[O-]"), ("2-methyl-2-nitropropane", "CC(C)(C)[N+](=O)[O-]"),
    ("nitroethylene", "C=C[N+](=O)[O-]"), ("2-nitroethanol", "OCC[N+](=O)[O-]"),
    ("dinitromethane", "O=[N+]([O-])C[N+](=O)[O-]"), ("1_1-dinitroethane", "CC([N+](=O)[O-])[N+](=O)[O-]"),
    ("methyl_nitrate", "CO[N+](=O)[O-]"), ("ethyl_nitrate", "CCO[N+](=O)[O-]"),
    ("n-nitrodimethylamine", "CN(C)[N+](=O)[O-]"), ("nitroguanidine", "NC(N)=N[N+](=O)[O-]"),
    ("nitrocyclopropane", "O=[N+]([O-])C1CC1"), ("nitrourea", "NC(=O)N[N+](=O)[O-]"),
    ("nitroacetone", "CC(=O)C[N+](=O)[O-]"), ("2-nitropyrrole", "O=[N+]([O-])c1ccc[nH]1"),
    ("4-nitroimidazole", "O=[N+]([O-])c1c[nH]cn1"), ("2-nitrofuran", "O=[N+]([O-])c1ccco1"),
    # aromatic hydrocarbons and benzenes
    ("benzene", "c1ccccc1"), ("phenol", "Oc1ccccc1"), ("styrene", "C=Cc1ccccc1"),
    ("ethylbenzene", "CCc1ccccc1"), ("o-xylene", "Cc1ccccc1C"), ("m-xylene", "Cc1cccc(C)c1"),
    ("p-xylene", "Cc1ccc(C)cc1"), ("phenylacetylene", "C#Cc1ccccc1"), ("catechol", "Oc1ccccc1O"),
    ("resorcinol", "Oc1cccc(O)c1"), ("hydroquinone", "Oc1ccc(O)cc1"), ("o-cresol", "Cc1ccccc1O"),
    ("m-cresol", "Cc1cccc(O)c1"), ("p-cresol", "Cc1ccc(O)cc1"), ("o-phenylenediamine", "Nc1ccccc1N"),
    ("p-toluidine", "Cc1ccc(N)cc1"), ("2-aminophenol", "Nc1ccccc1O"),
    # heteroaromatics
    ("pyrrole", "c1cc[nH]c1"), ("furan", "c1ccoc1"), ("imidazole", "c1c[nH]cn1"), ("oxazole", "c1cocn1"),
    ("isoxazole", "c1cnoc1"), ("pyrazole", "c1cn[nH]c1"), ("pyrimidine", "c1cncnc1"), ("pyrazine", "c1cnccn1"),
    ("pyridazine", "c1ccnnc1"), ("1_2_3-triazole", "c1c[nH]nn1"), ("1_2_4-triazole", "c1nc[nH]n1"),
    ("tetrazole", "c1nn[nH]n1"), ("1_3_5-triazine", "c1ncncn1"), ("1_2_4-triazine", "c1cnncn1"),
    ("furazan", "c1cnon1"), ("1_3_4-oxadiazole", "c1nnco1"), ("1_2_4-oxadiazole", "c1ncon1"),
    ("2-picoline", "Cc1ccccn1"), ("3-picoline", "Cc1cccnc1"), ("4-picoline", "Cc1ccncc1"),
    ("2-methylfuran", "Cc1ccco1"), ("furfural", "O=Cc1ccco1"), ("furfuryl_alcohol", "OCc1ccco1"),
    ("2-furoic_acid", "O=C(O)c1ccco1"), ("n-methylpyrrole", "Cn1cccc1"), ("n-methylimidazole", "Cn1ccnc1"),
    ("2-methylimidazole", "Cc1ncc[nH]1"), ("4-methylimidazole", "Cc1c[nH]cn1"), ("2-aminopyridine", "Nc1ccccn1"),
    ("4-aminopyridine", "Nc1ccncc1"), ("2-pyridone", "O=c1cccc[nH]1"), ("4-pyridone", "O=c1cc[nH]cc1"),
    ("nicotinonitrile", "N#Cc1cccnc1"), ("uracil", "O=c1cc[nH]c(=O)[nH]1"), ("cytosine", "Nc1cc[nH]c(=O)n1"),
    ("2-aminopyrimidine", "Nc1ncccn1"), ("2-methyloxazole", "Cc1ncco1"), ("2-acetylfuran", "CC(=O)c1ccco1"),
    ("pyrrole-2-carboxaldehyde", "O=Cc1ccc[nH]1"), ("2-aminoimidazole", "Nc1ncc[nH]1"),
    ("3-methylisoxazole", "Cc1ccon1"), ("aminopyrazine", "Nc1cnccn1"), ("3-aminopyrazole", "Nc1cc[nH]n1"),
    # oximes and related
    ("formaldoxime", "C=NO"), ("acetaldoxime", "CC=NO"), ("acetone_oxime", "CC(C)=NO"),
    ("2-butanone_oxime", "CCC(C)=NO"), ("cyclohexanone_oxime", "ON=C1CCCCC1"),
    ("cyclopentanone_oxime", "ON=C1CCCC1"), ("dimethylglyoxime", "CC(=NO)C(C)=NO"), ("glyoxime", "ON=CC=NO"),
    ("propanal_oxime", "CCC=NO"), ("furfural_oxime", "ON=Cc1ccco1"),
    # amino acids (neutral, non-zwitterionic form; glycine and alanine are in the extensibility set)
    ("beta-alanine", "NCCC(=O)O"), ("sarcosine", "CNCC(=O)O"), ("serine", "NC(CO)C(=O)O"),
    ("threonine", "CC(O)C(N)C(=O)O"), ("valine", "CC(C)C(N)C(=O)O"), ("proline", "O=C(O)C1CCCN1"),
    ("2-aminobutanoic_acid", "CCC(N)C(=O)O"), ("4-aminobutanoic_acid", "NCCCC(=O)O"),
    ("3-aminobutanoic_acid", "CC(N)CC(=O)O"), ("2-aminoisobutyric_acid", "CC(C)(N)C(=O)O"),
    ("norvaline", "CCCC(N)C(=O)O"), ("homoserine", "NC(CCO)C(=O)O"), ("isoserine", "NCC(O)C(=O)O"),
    ("n_n-dimethylglycine", "CN(C)CC(=O)O"), ("n-methylalanine", "CNC(C)C(=O)O"),
    ("aminomalonic_acid", "NC(C(=O)O)C(=O)O"), ("2_3-diaminopropanoic_acid", "NCC(N)C(=O)O"),
    ("azetidine-2-carboxylic_acid", "O=C(O)C1CCN1"), ("5-aminopentanoic_acid", "NCCCCC(=O)O"),
    ("isovaline", "CCC(C)(N)C(=O)O"), ("n-ethylglycine", "CCNCC(=O)O"),
    # alkanes, cycloalkanes, alkenes, alkynes (bicyclics and dienes the generator does not make)
    ("n-butane", "CCCC"), ("isobutane", "CC(C)C"), ("n-pentane", "CCCCC"), ("neopentane", "CC(C)(C)C"),
    ("n-hexane", "CCCCCC"), ("n-heptane", "CCCCCCC"), ("n-octane", "CCCCCCCC"),
    ("isooctane", "CC(C)CC(C)(C)C"), ("cyclobutane", "C1CCC1"), ("cyclopentane", "C1CCCC1"),
    ("cyclohexane", "C1CCCCC1"), ("methylcyclohexane", "CC1CCCCC1"), ("norbornane", "C1CC2CCC1C2"),
    ("bicyclo_2_2_2_octane", "C1CC2CCC1CC2"), ("spiropentane", "C1CC12CC2"), ("bicyclo_3_1_0_hexane", "C1CC2CC2C1"),
    ("bicyclo_3_3_0_octane", "C1CC2CCCC2C1"), ("1-butene", "C=CCC"), ("2-butene", "CC=CC"),
    ("isobutylene", "C=C(C)C"), ("1_3-butadiene", "C=CC=C"), ("isoprene", "C=CC(C)=C"),
    ("1_3-cyclohexadiene", "C1=CCCC=C1"), ("1_4-cyclohexadiene", "C1=CCC=CC1"), ("cyclopentadiene", "C1=CCC=C1"),
    ("cyclohexene", "C1=CCCCC1"), ("cyclopentene", "C1=CCCC1"), ("norbornene", "C1=CC2CCC1C2"),
    ("1_5-hexadiene", "C=CCCC=C"), ("allene", "C=C=C"), ("1-butyne", "C#CCC"), ("2-butyne", "CC#CC"),
    ("1-hexyne", "C#CCCCC"), ("vinylacetylene", "C#CC=C"), ("diacetylene", "C#CC#C"),
    ("1_3_5-hexatriene", "C=CC=CC=C"), ("cyclooctatetraene", "C1=CC=CC=CC=C1"),
    ("1_3-cyclooctadiene", "C1=CC=CCCCC1"), ("methylenecyclohexane", "C=C1CCCCC1"),
]

# --------------------------------------------------------------------------- group SMARTS (report)
AMINE_N = "[NX3;!a;!$(N[#6,#7]=[#6,#7,#8]);!$(N[#7,#8]);!$(N#*);!$(N-[#6]#*);!$([N+])]"
GROUP_SMARTS: dict[str, str] = {
    "alcohol": "[OX2H][CX4]",
    "phenol": "[OX2H]c",
    "ether": "[OD2;!a;!$(O[#6]=[#7,#8]);!$(O[#7,#8])]([#6])[#6]",
    "aldehyde": "[CX3;H1,H2;!$(C[#7,#8])]=O",
    "ketone": "[#6][CX3](=O)[#6]",
    "carboxylic_acid": "[CX3](=O)[OX2H1]",
    "ester": "[CX3](=O)[OX2][#6]",
    "primary_amine": AMINE_N.replace("[NX3;", "[NX3;H2;"),
    "secondary_amine": AMINE_N.replace("[NX3;", "[NX3;H1;"),
    "tertiary_amine": AMINE_N.replace("[NX3;", "[NX3;H0;"),
    "amide": "[NX3][CX3](=O)",
    "nitrile": "[CX2]#[NX1]",
    "nitro": "[$([NX3](=O)=O),$([NX3+](=O)[O-])]",
    "oxime": "[CX3]=[NX2][OX2H]",
    "amino_acid": "*",  # amine (any) and carboxylic acid in one molecule; special-cased
    "benzene_ring": "c1ccccc1",
    "pyridine_ring": "n1ccccc1",
    "pyrrole_ring": "[nX3]1cccc1",
    "furan_ring": "o1cccc1",
    "imidazole_ring": "[nX3]1c[nX2]cc1",
    "oxazole_ring": "o1cncc1",
    "pyrimidine_ring": "n1cnccc1",
    "other_heteroaromatic": "*",  # aromatic N/O ring not of the named kinds above; special-cased
    "alkane": "*",  # hydrocarbons: special-cased
    "cycloalkane": "*",
    "alkene": "*",
    "alkyne": "*",
}
_PATTERNS = {k: Chem.MolFromSmarts(v) for k, v in GROUP_SMARTS.items() if v != "*"}
_AMINE = Chem.MolFromSmarts(AMINE_N)
_NAMED_HET = [k for k in GROUP_SMARTS if k.endswith("_ring") and k != "benzene_ring"]
_NITRO = Chem.MolFromSmarts("[N+;X3](=O)[O-]")


def groups_of(mol: Chem.Mol) -> list[str]:
    """The functional groups (keys of GROUP_SMARTS) present in a molecule."""
    found = [k for k, p in _PATTERNS.items() if mol.HasSubstructMatch(p)]
    if "carboxylic_acid" in found and mol.HasSubstructMatch(_AMINE):
        found.append("amino_acid")
    if any(a.GetIsAromatic() and a.GetSymbol() in "NO" for a in mol.GetAtoms()) and not any(
        k in found for k in _NAMED_HET
    ):
        found.append("other_heteroaromatic")
    if all(a.GetSymbol() == "C" for a in mol.GetAtoms()) and not any(a.GetIsAromatic() for a in mol.GetAtoms()):
        orders = {b.GetBondType() for b in mol.GetBonds()}
        if Chem.BondType.TRIPLE in orders:
            found.append("alkyne")
        elif Chem.BondType.DOUBLE in orders:
            found.append("alkene")
        elif mol.GetRingInfo().NumRings():
            found.append("cycloalkane")
        else:
            found.append("alkane")
    return sorted(found, key=list(GROUP_SMARTS).index)


# --------------------------------------------------------------------------- checks
def canonical(smiles_or_mol) -> str | None:
    mol = Chem.MolFromSmiles(smiles_or_mol) if isinstance(smiles_or_mol, str) else smiles_or_mol
    if mol is None:
        return None
    mol = Chem.Mol(mol)
    Chem.RemoveStereochemistry(mol)
    return Chem.MolToSmiles(mol)


def violation(mol: Chem.Mol | None) -> str | None:
    """Why a molecule is not allowed in the list (None if it is)."""
    if mol is None:
        return "does not sanitise"
    if not 1 <= mol.GetNumHeavyAtoms() <= MAX_HEAVY:
        return f"{mol.GetNumHeavyAtoms()} heavy atoms"
    nitro = {i for match in mol.GetSubstructMatches(_NITRO) for i in match}
    for atom in mol.GetAtoms():
        if atom.GetSymbol() not in ("C", "N", "O"):
            return f"element {atom.GetSymbol()}"
        if atom.GetIsotope():
            return "isotope"
        if atom.GetNumRadicalElectrons():
            return "radical"
        if atom.GetFormalCharge() and atom.GetIdx() not in nitro:
            return "formal charge outside a nitro group"
    if Chem.GetFormalCharge(mol):
        return "net charge"
    return None


_UNUSUAL = {
    "an sp3 carbon with two N/O neighbours (hemiacetal, aminal, gem-diol)": "[CX4]([#7,#8])[#7,#8]",
    "an enol, enamine, ynol or ynamine": "[OX2,NX3;!$([N+])]-[CX3,CX2;!a]=,#[#6]",
}
_UNUSUAL_PATTERNS = {k: Chem.MolFromSmarts(v) for k, v in _UNUSUAL.items()}
_OXIME = Chem.MolFromSmarts("[CX3]=[NX2][OX2H]")


def unusual(mol: Chem.Mol) -> str | None:
    """Why a systematic product is not a textbook molecule (None if it is); curated ones may be."""
    for why, patt in _UNUSUAL_PATTERNS.items():
        if mol.HasSubstructMatch(patt):
            return why
    allowed = {frozenset(m[i] for i in pair) for m in mol.GetSubstructMatches(_NITRO) for pair in ((0, 1), (0, 2))}
    allowed |= {frozenset(m[1:]) for m in mol.GetSubstructMatches(_OXIME)}
    for bond in mol.GetBonds():
        ends = frozenset((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()))
        if (bond.GetBeginAtom().GetSymbol() in "NO" and bond.GetEndAtom().GetSymbol() in "NO"
                and not bond.GetIsAromatic() and ends not in allowed):
            return "an N-N, N-O or O-O bond outside nitro and oxime groups"
    return None


def embeds(smiles: str) -> bool:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = SEED
    return AllChem.EmbedMolecule(mol, params) == 0


def read_smi(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for line in path.read_text().splitlines():
        line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        if line:
            name, smiles = line.split()
            pairs.append((name, smiles))
    return pairs


class Excluded:
    """The extensibility molecules, their stereoisomers and tautomers."""

    def __init__(self, pairs):
        self._enum = rdMolStandardize.TautomerEnumerator()
        self.names = {}
        self.tautomers = {}
        for name, smi in pairs:
            mol = Chem.MolFromSmiles(smi)
            self.names[canonical(mol)] = name
            self.tautomers.setdefault(rdMolDescriptors.CalcMolFormula(mol), {})[self._taut(mol)] = name

    def _taut(self, mol):
        return canonical(self._enum.Canonicalize(mol))

    def match(self, mol: Chem.Mol) -> str | None:
        hit = self.names.get(canonical(mol))
        if hit is None:
            same_formula = self.tautomers.get(rdMolDescriptors.CalcMolFormula(mol))
            if same_formula:
                hit = same_formula.get(self._taut(mol))
        return hit


# --------------------------------------------------------------------------- building blocks
def _hetero_ok(atom: Chem.Atom) -> bool:
    """May a heteroatom (O, N) bond to this carbon? sp3 or aromatic C with no N/O neighbour."""
    if atom.GetSymbol() != "C" or atom.GetTotalNumHs() == 0:
        return False
    if not (atom.GetIsAromatic() or atom.GetHybridization() == Chem.HybridizationType.SP3):
        return False
    return not any(n.GetSymbol() in ("N", "O") for n in atom.GetNeighbors())


def attach(mol: Chem.Mol, idx: int, frag: str) -> str | None:
    """Canonical SMILES of mol with fragment frag (bonded through its first atom) on atom idx."""
    f = Chem.MolFromSmiles(frag)
    rw = Chem.RWMol(Chem.CombineMols(mol, f))
    atom = rw.GetAtomWithIdx(idx)
    if atom.GetTotalNumHs() == 0:
        return None
    if atom.GetNumExplicitHs():
        atom.SetNumExplicitHs(atom.GetNumExplicitHs() - 1)
    rw.AddBond(idx, mol.GetNumAtoms(), Chem.BondType.SINGLE)
    out = rw.GetMol()
    try:
        Chem.SanitizeMol(out)
    except Exception:
        return None
    return Chem.MolToSmiles(out)


def grow(seeds: list[str], max_atoms: int) -> list[str]:
    """All carbon skeletons reachable from seeds by adding methyls, up to max_atoms atoms."""
    seen = {canonical(s) for s in seeds}
    frontier = sorted(seen)
    while frontier:
        nxt = set()
        for smi in frontier:
            mol = Chem.MolFromSmiles(smi)
            if mol.GetNumAtoms() >= max_atoms:
                continue
            for a in mol.GetAtoms():
                new = attach(mol, a.GetIdx(), "C")
                if new and new not in seen:
                    nxt.add(new)
        seen |= nxt
        frontier = sorted(nxt)
    return sorted(seen, key=lambda s: (Chem.MolFromSmiles(s).GetNumAtoms(), s))


def unsaturate(smiles: list[str], order: Chem.BondType) -> list[str]:
    """Every molecule with one C-C bond of the skeletons raised to order (double or triple)."""
    need = 1 if order == Chem.BondType.DOUBLE else 2
    out = set()
    for smi in smiles:
        mol = Chem.MolFromSmiles(smi)
        for b in mol.GetBonds():
            a1, a2 = b.GetBeginAtom(), b.GetEndAtom()
            if b.GetBondType() != Chem.BondType.SINGLE or min(a1.GetTotalNumHs(), a2.GetTotalNumHs()) < need:
                continue
            if b.IsInRing() and (order == Chem.BondType.TRIPLE or b.IsInRingSize(3)):
                continue
            if order == Chem.BondType.DOUBLE and (a1.IsInRingSize(3) or a2.IsInRingSize(3)):
                continue  # no methylenecyclopropanes / cyclopropenes
            rw = Chem.RWMol(mol)
            rw.GetBondWithIdx(b.GetIdx()).SetBondType(order)
            m = rw.GetMol()
            try:
                Chem.SanitizeMol(m)
            except Exception:
                continue
            out.add(Chem.MolToSmiles(m))
    return sorted(out)


def substituents(skeletons: list[str], max_heavy: int, hetero_safe: bool) -> list[str]:
    """Substituents '[*]R' from skeletons, attached at every distinct position."""
    out = set()
    for smi in skeletons:
        mol = Chem.MolFromSmiles(smi)
        if mol.GetNumHeavyAtoms() > max_heavy:
            continue
        for a in mol.GetAtoms():
            if hetero_safe and not _hetero_ok(a):
                continue
            if a.GetTotalNumHs() and a.GetSymbol() == "C":
                s = attach(mol, a.GetIdx(), "*")
                if s:
                    out.add(s)
    return sorted(out)


def functionalised(rgroups: list[str], frags: list[str]) -> list[str]:
    """Substituents carrying one more group (frag on an sp3 carbon with no heteroatom neighbour)."""
    out = set()
    for r in rgroups:
        mol = Chem.MolFromSmiles(r)
        for a in mol.GetAtoms():
            if not _hetero_ok(a) or a.GetIsAromatic():
                continue
            for frag in frags:
                s = attach(mol, a.GetIdx(), frag)
                if s:
                    out.add(s)
    return sorted(out)


@functools.lru_cache(maxsize=None)
def heavy(smiles: str) -> int:
    return sum(1 for a in Chem.MolFromSmiles(smiles).GetAtoms() if a.GetAtomicNum() > 0)


def _combos(sized: list[list[tuple[str, int]]], budget: int):
    """Combinations (one entry per pool, pools sorted by size) whose sizes sum to <= budget."""
    if not sized:
        yield ()
        return
    for entry in sized[0]:
        if entry[1] > budget:
            break
        for rest in _combos(sized[1:], budget - entry[1]):
            yield (entry,) + rest


def fill(template: str, pools: list[list[str]], max_heavy: int = MAX_HEAVY) -> set[str]:
    """molzip the template's [*:k] slots with every combination of substituents (or H)."""
    sized = [sorted(((r, 0 if r == "H" else heavy(r)) for r in pool), key=lambda e: (e[1], e[0])) for pool in pools]
    out = set()
    for combo in _combos(sized, max_heavy - heavy(template)):
        tmpl = Chem.RWMol(Chem.MolFromSmiles(template))
        parts = []
        drop = []
        for k, (r, _) in enumerate(combo, 1):
            if r == "H":
                drop += [a.GetIdx() for a in tmpl.GetAtoms() if a.GetAtomicNum() == 0 and a.GetAtomMapNum() == k]
            else:
                parts.append(r.replace("*", f"[*:{k}]"))
        for i in sorted(drop, reverse=True):
            tmpl.RemoveAtom(i)
        mol = Chem.MolFromSmiles(".".join([Chem.MolToSmiles(tmpl)] + parts))
        if mol is None:
            continue
        try:
            mol = Chem.molzip(mol)
            Chem.SanitizeMol(mol)
        except Exception:
            continue
        out.add(canonical(mol))
    return out


AROMATIC_CORES = {
    "benzene": ["c1ccccc1"],
    "pyridine": ["c1ccncc1"],
    "pyrrole": ["c1cc[nH]c1"],
    "furan": ["c1ccoc1"],
    "imidazole": ["c1c[nH]cn1"],
    "oxazole": ["c1cocn1"],
    "pyrimidine": ["c1cncnc1"],
    "other_heteroaromatic": ["c1cnccn1", "c1ccnnc1", "c1cn[nH]c1", "c1cnoc1", "c1c[nH]nn1", "c1nc[nH]n1",
                             "c1nn[nH]n1", "c1nnco1", "c1ncon1", "c1cnon1", "c1ncncn1", "c1cnncn1"],
}
RING_SUBSTITUENTS = ["C", "CC", "C(C)C", "C=C", "C#C", "O", "N", "NC", "N(C)C", "OC", "C=O", "C(C)=O",
                     "C(=O)O", "C(=O)OC", "C(N)=O", "C#N", "[N+](=O)[O-]", "CO", "CN", "C1CC1", "OCC", "NC=O"]
RING_ON_N = {"C", "CC", "C(C)C", "C=C", "C=O", "C(C)=O", "C1CC1"}  # allowed on [nH]


def aromatic_products(cores: list[str]) -> set[str]:
    def sites(mol):
        return [a for a in mol.GetAtoms() if a.GetTotalNumHs() > 0]

    def ok(atom, frag):
        if frag == "O" and atom.IsInRingSize(5):
            return False  # hydroxy-furans/pyrroles/azoles are minor tautomers of furanones and lactams
        return atom.GetSymbol() == "C" or frag in RING_ON_N

    out = set()
    for core in cores:
        mol = Chem.MolFromSmiles(core)
        out.add(canonical(mol))
        mono = set()
        for a in sites(mol):
            for frag in RING_SUBSTITUENTS:
                if ok(a, frag) and mol.GetNumAtoms() + heavy(frag) <= MAX_HEAVY:
                    s = attach(mol, a.GetIdx(), frag)
                    if s:
                        mono.add(s)
        out |= mono
        for smi in sorted(mono):  # second substituent on another ring atom
            m = Chem.MolFromSmiles(smi)
            ring = {i for r in m.GetRingInfo().AtomRings() for i in r}
            for a in sites(m):
                if a.GetIdx() not in ring:
                    continue
                for frag in RING_SUBSTITUENTS:
                    if ok(a, frag) and m.GetNumHeavyAtoms() + heavy(frag) <= MAX_HEAVY:
                        s = attach(m, a.GetIdx(), frag)
                        if s:
                            out.add(canonical(s))
    return out


def candidates() -> list[tuple[str, int, set[str]]]:
    """(group, quota, candidate canonical SMILES) for the systematic part, in selection order."""
    alkanes = grow(["C"], MAX_HEAVY)
    rings = grow([f"C1{'C' * (n - 2)}C1" for n in range(3, 9)], MAX_HEAVY)
    alkenes = unsaturate(alkanes + rings, Chem.BondType.DOUBLE)
    alkynes = unsaturate(alkanes, Chem.BondType.TRIPLE)
    arenes = ["c1ccccc1", "Cc1ccccc1", "c1ccncc1", "c1ccoc1", "c1cc[nH]c1"]

    alkyl = substituents(alkanes, 6, False)
    cycloalkyl = substituents(rings, 6, False)
    alkenyl = substituents(alkenes, 5, False)
    allyl = substituents(alkenes, 5, True)
    alkynyl = substituents(alkynes, 5, False)
    propargyl = substituents(alkynes, 5, True)
    aryl = substituents(arenes, 7, False)
    carb = alkyl + cycloalkyl + alkenyl + alkynyl + aryl + ["*n1cccc1"]
    sat = alkyl + cycloalkyl + allyl + propargyl + aryl
    sat_aliph = alkyl + cycloalkyl + allyl + propargyl
    amino = functionalised(substituents(alkanes, 5, False) + substituents(rings, 5, False), ["N", "NC", "N(C)C"])
    hetero = functionalised(substituents(alkanes, 4, False), ["O", "N", "OC", "C#N", "NC"])
    H = ["H"]

    def hydrocarbons(pool):
        return {canonical(s) for s in pool}

    cand = [
        ("alkane", 10, hydrocarbons(alkanes)),
        ("cycloalkane", 15, hydrocarbons(rings)),
        ("alkene", 20, hydrocarbons(alkenes)),
        ("alkyne", 15, hydrocarbons(alkynes)),
        ("alcohol", 15, fill("[*:1]O", [sat_aliph])),
        ("ether", 15, fill("[*:1]O[*:2]", [sat, sat])),
        ("aldehyde", 15, fill("[*:1]C=O", [carb])),
        ("ketone", 15, fill("[*:1]C(=O)[*:2]", [carb, carb])),
        ("carboxylic_acid", 15, fill("[*:1]C(=O)O", [carb])),
        ("ester", 15, fill("[*:1]C(=O)O[*:2]", [H + carb, sat])),
        ("primary_amine", 10, fill("[*:1]N", [sat])),
        ("secondary_amine", 15, fill("[*:1]N[*:2]", [sat, sat])),
        ("tertiary_amine", 15, fill("[*:1]N([*:2])[*:3]", [sat, sat, sat])),
        ("amide", 15, fill("[*:1]C(=O)N([*:2])[*:3]", [H + carb, H + sat, H + sat])),
        ("nitrile", 15, fill("[*:1]C#N", [carb])),
        ("nitro", 15, fill("[*:1][N+](=O)[O-]", [sat])),
        ("oxime", 15, fill("[*:1]C([*:2])=NO", [H + carb, H + carb])),
        ("amino_acid", 10, fill("[*:1]C(=O)O", [amino])),
    ]
    ring_quota = {"benzene": 30, "other_heteroaromatic": 25}
    for name, cores in AROMATIC_CORES.items():
        cand.append((name if name == "other_heteroaromatic" else f"{name}_ring", ring_quota.get(name, 14),
                     aromatic_products(cores)))
    bifunctional = (fill("[*:1]O", [hetero]) | fill("[*:1]C(=O)[*:2]", [hetero, alkyl])
                    | fill("[*:1]C(=O)O", [hetero]) | fill("[*:1]C(N)=O", [hetero]) | fill("[*:1]C#N", [hetero]))
    cand.append(("bifunctional", 25, bifunctional))
    return cand


def _order(smiles: str) -> str:
    return hashlib.sha1(smiles.encode()).hexdigest()


def build(embed: bool = True, quota_scale: int = 1) -> str:
    """The text of the molecule list (deterministic for one RDKit version); every group quota times ``quota_scale``.

    embed=False skips the ETKDG check (for a fast test; the text is the same when every molecule embeds).
    """
    excluded = Excluded(read_smi(EXTENSIBILITY))
    chosen: dict[str, tuple[str, str]] = {}  # canonical -> (name, source)
    dropped_embed: list[str] = []
    dropped_excluded: set[str] = set()
    dropped_other: list[str] = []

    def admit(name: str, smiles: str, source: str) -> bool:
        mol = Chem.MolFromSmiles(smiles)
        why = violation(mol)
        if why:
            dropped_other.append(f"{name} {smiles} ({why})")
            return False
        can = canonical(mol)
        if can in chosen or (source not in ("train_pool", "curated") and unusual(mol)):
            return False
        hit = excluded.match(mol)
        if hit:
            dropped_excluded.add(f"{can} (= {hit})")
            return False
        if embed and not embeds(can):
            dropped_embed.append(f"{name} {can}")
            return False
        chosen[can] = (name, source)
        return True

    for name, smi in read_smi(TRAIN_POOL):
        admit(name, smi, "train_pool")
    for name, smi in CURATED:
        admit(name, smi, "curated")
    for group, quota, cands in candidates():
        quota *= quota_scale
        bins: dict[int, list[str]] = {}
        for s in sorted(cands, key=_order):
            bins.setdefault(heavy(s), []).append(s)
        queues = [bins[k] for k in sorted(bins)]
        taken = 0
        while taken < quota and any(queues):
            for q in queues:
                if q and taken < quota:
                    if admit(f"{group}_{taken + 1:03d}", q.pop(0), group):
                        taken += 1

    names = [n for n, _ in chosen.values()]
    assert len(set(names)) == len(names), "duplicate names"
    assert all(NAME_RE.match(n) for n in names), [n for n in names if not NAME_RE.match(n)]

    counts = Counter()
    for can in chosen:
        counts.update(groups_of(Chem.MolFromSmiles(can)))
    sources = Counter(src for _, src in chosen.values())
    heavy_hist = Counter(heavy(c) for c in chosen)
    made_by = COMMAND + (f" --quota-scale {quota_scale}" if quota_scale != 1 else "")
    lines = [
        "# Molecule list for sampling (kdframe data sample --smiles-file): neutral CHNO molecules, 1-8 heavy atoms (name SMILES)",
        f"# Made by: {made_by}   (RDKit {rdBase.rdkitVersion}); deterministic, no download.",
        "# Assembly: data/train_pool.smi (kept) + curated named molecules + systematic products: carbon skeletons",
        "#   (all alkanes/ring skeletons up to 8 C, their alkenes/alkynes) as substituents joined into functional-group",
        "#   templates with RDKit molzip, and substituted (hetero)aromatic cores; per group a quota drawn round-robin",
        "#   over heavy-atom counts in SHA-1 order of canonical SMILES; no enols/enamines, hemiacetals/aminals, or N-N,",
        "#   N-O, O-O bonds outside nitro and oxime groups among them. Systematic names are <group>_<NNN>.",
        "# Filters: RDKit sanitises; only C,H,N,O; 1-8 heavy atoms; net charge 0; no radicals, isotopes or formal charges",
        "#   except the charge-separated nitro group [N+](=O)[O-]; ETKDGv3 embeds (seed 42); duplicates dropped",
        "#   (canonical SMILES without stereo); data/extensibility.smi molecules, their stereoisomers and tautomers excluded.",
        f"# Molecules: {len(chosen)} (" + ", ".join(f"{k} {sources[k]}" for k in ["train_pool", "curated"])
        + ", systematic " + str(len(chosen) - sources["train_pool"] - sources["curated"]) + ")",
        "# Heavy atoms: " + ", ".join(f"{k}: {heavy_hist[k]}" for k in sorted(heavy_hist)),
        "# Molecules per functional group (RDKit SMARTS in scripts/make_molecule_list.py; a molecule counts in every group it has):",
    ]
    items = [f"{k} {counts[k]}" for k in GROUP_SMARTS]
    for i in range(0, len(items), 7):
        lines.append("#   " + ", ".join(items[i:i + 7]))
    if quota_scale != 1:
        lines.append("# Names: systematic names are numbered within this list; it holds every molecule of the --quota-scale 1"
                     " list, some under other names: compare lists by SMILES.")
    lines.append(f"# Excluded as extensibility molecules or their tautomers: {len(dropped_excluded)}"
                 + (": " + "; ".join(sorted(dropped_excluded)) if dropped_excluded else ""))
    lines.append(f"# Dropped, no ETKDG embedding: {len(dropped_embed)}"
                 + (": " + "; ".join(dropped_embed) if dropped_embed else ""))
    if dropped_other:
        lines.append("# Dropped by the filters: " + "; ".join(dropped_other))
    lines += [f"{name} {can}" for can, (name, _) in chosen.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quota-scale", type=int, default=1, metavar="K",
                    help=f"every group's quota times K ({LARGE.relative_to(ROOT)}: K = {LARGE_QUOTA_SCALE})")
    ap.add_argument("--out", type=Path, help="default: " + ", ".join(
        f"{path.relative_to(ROOT)} for K = {k}" for k, path in SHIPPED.items()) + "; required for any other K")
    ap.add_argument("--check", action="store_true", help="exit 1 if the file differs from what would be written")
    args = ap.parse_args(argv)
    if args.quota_scale < 1:
        ap.error(f"--quota-scale must be a positive integer, got {args.quota_scale}")
    if args.out is None:
        args.out = SHIPPED.get(args.quota_scale)
        if args.out is None:
            ap.error(f"--quota-scale {args.quota_scale} needs --out (the shipped lists are K = {', '.join(map(str, SHIPPED))})")
    return write_or_check(build(quota_scale=args.quota_scale), args.out, args.check)


def write_or_check(text: str, out: Path, check: bool) -> int:
    """Write a list to ``out`` and print its header; with ``check`` only compare (exit status 1 if it differs)."""
    if check:
        same = out.is_file() and out.read_text() == text
        print(f"{out}: {'up to date' if same else 'DIFFERS'}")
        return 0 if same else 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    print("\n".join(line for line in text.splitlines() if line.startswith("#")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
