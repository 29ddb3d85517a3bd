"""The enumerated molecule list (data/molecules/organic_chno_enumerated.smi) and its generator
(scripts/enumerate_molecules.py)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

Chem = pytest.importorskip("rdkit.Chem")
from rdkit import rdBase  # noqa: E402
from rdkit.Chem import rdMolDescriptors  # noqa: E402
from repo_scripts import load_script  # noqa: E402

LIST = Path(__file__).resolve().parents[1] / "data" / "molecules" / "organic_chno_enumerated.smi"


@pytest.fixture(scope="module")
def gen():
    return load_script("scripts/enumerate_molecules.py")


@pytest.fixture(scope="module")
def pairs(gen):
    return gen.read_smi(LIST)


@pytest.fixture(scope="module")
def canonical_set(gen, pairs):
    return {gen.canonical(smi) for _, smi in pairs}


def test_file_parses_with_the_cli_reader(pairs):
    from kdframe.commands.data import parse_smiles

    assert parse_smiles([], str(LIST)) == pairs
    names = [n for n, _ in pairs]
    assert len(set(names)) == len(names) == len({smi for _, smi in pairs}) > 2000
    assert any("enumerate_molecules.py" in line and "RDKit" in line for line in LIST.read_text().splitlines()[:3])


def test_every_molecule_is_kept_by_the_rules(gen, pairs):
    for name, smi in pairs:
        mol = Chem.MolFromSmiles(smi)
        assert mol is not None and 1 <= mol.GetNumHeavyAtoms() <= 6, name
        assert gen.kept_reason(mol) is None, (name, smi, gen.kept_reason(mol))


def test_extensibility_molecules_and_their_tautomers_are_left_out(gen, pairs):
    excluded = gen.Excluded(gen.read_smi(gen.EXTENSIBILITY))
    assert not [smi for _, smi in pairs if excluded.match(Chem.MolFromSmiles(smi))]


def test_the_enumeration_is_complete_on_known_isomer_counts(canonical_set):
    """All 13 alkanes up to hexane (1, 1, 1, 2, 3, 5 isomers) and every C4H10O but the two extensibility molecules."""
    alkanes = [s for s in canonical_set if set(s) <= set("C()")]  # no digit: no ring
    assert len(alkanes) == 13, sorted(alkanes)
    c4h10o = {s for s in canonical_set if rdMolDescriptors.CalcMolFormula(Chem.MolFromSmiles(s)) == "C4H10O"}
    # 7 isomers: 4 butanols, 3 ethers; 1-butanol and diethyl ether are extensibility molecules
    assert c4h10o == {"CCC(C)O", "CC(C)CO", "CC(C)(C)O", "CCCOC", "COC(C)C"}


@pytest.mark.parametrize("smiles", ["c1ccccc1", "c1cncnc1", "CC(N)=O", "CCC(N)=O", "CC(=O)O", "CCNC=O", "CC=NO",
                                    "NCCC(=O)O", "C1CCOC1", "c1ccoc1", "c1cc[nH]c1", "CC#N", "CC(C)C=O", "OCCO"])
def test_textbook_molecules_are_in_it(canonical_set, smiles):
    assert Chem.CanonSmiles(smiles) in canonical_set


@pytest.mark.parametrize("smiles, why", [
    ("C=CO", "enol"), ("OCO", "gem-diol"), ("C=C=C", "cumulated"), ("C1=CC1", "strained"), ("C1#CCCC1", "strained"),
    ("NN", "N-N"), ("COO", "N-N, N-O or O-O"), ("N=CO", "imidic acid"), ("COC#N", "cyanate"),
])
def test_unstable_and_strained_graphs_are_not_kept(gen, canonical_set, smiles, why):
    mol = Chem.MolFromSmiles(smiles)
    assert why in (gen.kept_reason(mol) or "")
    assert gen.canonical(mol) not in canonical_set


def test_script_reproduces_the_shipped_file_up_to_five_heavy_atoms(gen):
    text = LIST.read_text()
    recorded = re.search(r"\(RDKit ([^)]+)\)", text).group(1)
    if recorded != rdBase.rdkitVersion:
        pytest.skip(f"list made with RDKit {recorded}, installed {rdBase.rdkitVersion}: canonical SMILES may differ")
    # the list is ordered by heavy-atom count, so a smaller enumeration is its first lines (6 atoms take 15 s)
    small = [line for line in gen.build(max_heavy=5).splitlines() if not line.startswith("#")]
    shipped = [line for line in text.splitlines() if not line.startswith("#")]
    assert small == shipped[:len(small)]
    assert Chem.MolFromSmiles(shipped[len(small)].split()[1]).GetNumHeavyAtoms() == 6
