"""The shipped molecule lists (data/molecules/organic_chno.smi and its quota-scaled organic_chno_large.smi) and
their generator (scripts/make_molecule_list.py)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

Chem = pytest.importorskip("rdkit.Chem")
from rdkit import rdBase  # noqa: E402
from repo_scripts import load_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE, LARGE = "organic_chno.smi", "organic_chno_large.smi"
LISTS = {BASE: 1, LARGE: 10}  # file -> --quota-scale
MIN_PER_GROUP = 15
GROUPS = ["alcohol", "ether", "aldehyde", "ketone", "carboxylic_acid", "ester", "primary_amine",
          "secondary_amine", "tertiary_amine", "amide", "nitrile", "nitro", "oxime", "amino_acid",
          "benzene_ring", "pyridine_ring", "pyrrole_ring", "furan_ring", "imidazole_ring", "oxazole_ring",
          "pyrimidine_ring", "other_heteroaromatic", "alkane", "cycloalkane", "alkene", "alkyne"]


@pytest.fixture(scope="module")
def gen():
    return load_script("scripts/make_molecule_list.py")


@pytest.fixture(scope="module", params=sorted(LISTS))
def shipped_list(request):
    """(path, quota scale) of one shipped list."""
    return ROOT / "data" / "molecules" / request.param, LISTS[request.param]


@pytest.fixture(scope="module")
def pairs(gen, shipped_list):
    return gen.read_smi(shipped_list[0])


def test_file_parses_with_the_cli_reader(pairs, shipped_list):
    from kdframe.commands.data import parse_smiles

    LIST, scale = shipped_list
    assert parse_smiles([], str(LIST)) == pairs
    assert len(pairs) >= 300 * scale
    names = [n for n, _ in pairs]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9_+-]*", n) for n in names)
    header = [line for line in LIST.read_text().splitlines() if line.startswith("#")]
    assert any("make_molecule_list.py" in line and "RDKit" in line for line in header)


def test_every_molecule_is_neutral_chno_with_1_to_8_heavy_atoms(pairs, gen):
    canon = set()
    for name, smi in pairs:
        mol = Chem.MolFromSmiles(smi)
        assert mol is not None, name
        assert gen.violation(mol) is None, (name, smi, gen.violation(mol))
        assert {a.GetSymbol() for a in Chem.AddHs(mol).GetAtoms()} <= {"C", "H", "N", "O"}, name
        assert 1 <= mol.GetNumHeavyAtoms() <= 8, name
        assert Chem.GetFormalCharge(mol) == 0, name
        charged = {a.GetIdx() for a in mol.GetAtoms() if a.GetFormalCharge()}
        nitro = {i for m in mol.GetSubstructMatches(Chem.MolFromSmarts("[N+](=O)[O-]")) for i in m}
        assert charged <= nitro, name  # the nitro group is the only charge-separated one
        can = gen.canonical(mol)
        assert can == smi, name  # stored canonical, without stereo
        assert can not in canon, name
        canon.add(can)


def test_extensibility_molecules_and_their_tautomers_are_left_out(pairs, gen):
    excluded = gen.Excluded(gen.read_smi(ROOT / "data" / "extensibility.smi"))
    listed = {smi for _, smi in pairs}
    for name, smi in gen.read_smi(ROOT / "data" / "extensibility.smi"):
        assert gen.canonical(smi) not in listed, name
    hits = [(n, s, excluded.match(Chem.MolFromSmiles(s))) for n, s in pairs]
    assert [h for h in hits if h[2]] == []
    # the check itself sees stereoisomers and tautomers
    assert excluded.match(Chem.MolFromSmiles("C[C@H](N)C(=O)O")) == "alanine"
    assert excluded.match(Chem.MolFromSmiles("CN=C(C)O")) == "n-methylacetamide"


def test_train_pool_is_kept(pairs, gen):
    listed = dict(pairs)
    for name, smi in gen.read_smi(ROOT / "data" / "train_pool.smi"):
        assert gen.canonical(listed[name]) == gen.canonical(smi), name


def test_the_large_list_holds_the_base_list(gen):
    base, large = (set(dict(gen.read_smi(ROOT / "data" / "molecules" / f)).values()) for f in (BASE, LARGE))
    assert base < large and len(large) > 4 * len(base)  # by SMILES: systematic names are numbered per list


def test_every_functional_group_is_covered(pairs, gen, shipped_list):
    counts = dict.fromkeys(GROUPS, 0)
    for _, smi in pairs:
        for g in gen.groups_of(Chem.MolFromSmiles(smi)):
            counts[g] = counts.get(g, 0) + 1
    low = {g: n for g, n in counts.items() if g in GROUPS and n < MIN_PER_GROUP}
    assert not low, low
    header = shipped_list[0].read_text()
    for g in GROUPS:
        assert f"{g} {counts[g]}" in header, g  # header counts are the real ones


def test_group_smarts_on_known_molecules(gen):
    cases = {"CCO": "alcohol", "COC": "ether", "CC=O": "aldehyde", "CC(C)=O": "ketone", "CC(=O)O": "carboxylic_acid",
             "COC(C)=O": "ester", "CCN": "primary_amine", "CNC": "secondary_amine", "CN(C)C": "tertiary_amine",
             "CC(N)=O": "amide", "CC#N": "nitrile", "C[N+](=O)[O-]": "nitro", "CC=NO": "oxime",
             "NCCC(=O)O": "amino_acid", "Cc1ccncc1": "pyridine_ring", "c1cc[nH]c1": "pyrrole_ring",
             "c1ccoc1": "furan_ring", "c1c[nH]cn1": "imidazole_ring", "c1cocn1": "oxazole_ring",
             "c1cncnc1": "pyrimidine_ring", "c1cn[nH]c1": "other_heteroaromatic", "CC(C)C": "alkane",
             "C1CC1": "cycloalkane", "C=CC": "alkene", "CC#C": "alkyne", "c1ccccc1": "benzene_ring"}
    for smi, group in cases.items():
        assert group in gen.groups_of(Chem.MolFromSmiles(smi)), (smi, group)
    assert "amide" not in gen.groups_of(Chem.MolFromSmiles("CCN"))
    assert "primary_amine" not in gen.groups_of(Chem.MolFromSmiles("CC(N)=O"))


def test_script_reproduces_the_shipped_file(gen, shipped_list):
    LIST, scale = shipped_list
    text = LIST.read_text()
    recorded = re.search(r"\(RDKit ([^)]+)\)", text).group(1)
    if recorded != rdBase.rdkitVersion:
        pytest.skip(f"list made with RDKit {recorded}, installed {rdBase.rdkitVersion}: canonical SMILES may differ")
    # embed=False: identical text when every molecule embeds (the header records that none was dropped);
    # a sample is embedded below
    assert gen.build(embed=False, quota_scale=scale) == text


def test_a_sample_embeds_with_the_fixed_seed(pairs, gen):
    for name, smi in pairs[::40]:
        assert gen.embeds(smi), name
