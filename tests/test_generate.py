"""``kdframe data generate``: every kind of configuration is made and sane, boxes at their density, deterministic
across runs, list orders and a resume after SIGKILL; unusable molecules reported by name and skipped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase.data import atomic_masses, vdw_radii

from kdframe import generate as gen
from kdframe.cli import main
from kdframe.data import read_dataset
from kdframe.data.packed import PackedDataset
from kdframe.errors import DataError

PAIRS = [("water", "O"), ("ethanol", "CCO"), ("acetic_acid", "CC(=O)O"), ("bad_ring", "C1CC"),
         ("methylamine", "CN"), ("trimethylsilane", "C[SiH](C)C")]
SETTINGS = gen.GenerateSettings(conformers=2, rattle=5, torsions=3, clusters=6, cluster_scan=3, boxes=2, box_atoms=48,
                                chunk_molecules=2, chunk_clusters=1, chunk_boxes=1, seed=7)
ARGS = ["--conformers", "2", "--rattle", "5", "--torsions", "3", "--clusters", "6", "--cluster-scan", "3",
        "--boxes", "2", "--box-atoms", "48", "--chunk-molecules", "2", "--seed", "7", "--no-progress"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def molecules():
    return {name: gen.molecule_configurations(name, smiles, SETTINGS) for name, smiles in PAIRS[:3] + PAIRS[4:5]}


def _sane(c: gen.Configurations, contacts: bool = False) -> None:
    for k, pos in enumerate(c.positions):
        assert gen.check(c.species, pos, c.molecule_of, c.bonds, None if c.cell is None else c.cell[k],
                         contacts=contacts) is None, (c.name, c.origins[k])


def test_molecule_kinds_are_made_and_sane(molecules):
    from rdkit import Chem

    ethanol = molecules["ethanol"]
    kinds = [o.split(":")[0] for o in ethanol.origins]
    assert kinds.count("conf") == 2 and kinds.count("rattle") == 5 and kinds.count("torsion") == 3
    assert {o for o in ethanol.origins if o.startswith("rattle")} == {f"rattle:{a:g}" for a in (0.05, 0.1, 0.15, 0.2, 0.25)}
    for c in molecules.values():
        _sane(c)
    assert not any(o.startswith("torsion") for o in molecules["water"].origins)  # no rotatable bond
    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    dihedrals = gen.rotatable_bonds(mol)
    assert [(j, k) for _, j, k, _ in dihedrals] == [(0, 1), (1, 2)]  # C-C (methyl rotor) and C-O
    for pos, origin in zip(ethanol.positions, ethanol.origins):
        if origin.startswith("torsion"):  # the dihedral moved by about delta from the conformer's own
            _, b, delta = origin.split(":")
            i, j, k, l = dihedrals[int(b)]
            bases = [p for p, o in zip(ethanol.positions, ethanol.origins) if o == "conf"]
            turned = _dihedral(pos, i, j, k, l)
            assert min(abs((turned - _dihedral(base, i, j, k, l) - int(delta) + 180) % 360 - 180) for base in bases) < 5


def _dihedral(x, i, j, k, l):
    b0, b1, b2 = x[i] - x[j], x[k] - x[j], x[l] - x[k]
    b1 = b1 / np.linalg.norm(b1)
    v, w = b0 - b0 @ b1 * b1, b2 - b2 @ b1 * b1
    return np.degrees(np.arctan2(np.cross(b1, v) @ w, v @ w))


def test_clusters_scan_down_to_three_quarters_of_the_vdw_contact(molecules):
    monomers = sorted((gen.monomer(c) for c in molecules.values()), key=lambda m: m.name)
    sizes = set()
    for index in range(6):
        c = gen.cluster_configurations(index, monomers, SETTINGS)
        _sane(c, contacts=True)
        size = int(c.origins[0].split(":")[1])
        sizes.add(size)
        assert c.molecule_of.max() == size - 1 and len(c.positions) == 3
        for pos, origin in zip(c.positions, c.origins):
            inter = c.molecule_of[:, None] != c.molecule_of[None]
            d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
            r = vdw_radii[c.species]
            ratio = (d / (r[:, None] + r[None]))[inter].min()
            assert ratio == pytest.approx(float(origin.split(":")[2]), abs=1e-3)
            assert d[inter].min() >= gen.MIN_DISTANCE
        assert [o.split(":")[2] for o in c.origins] == ["1.1", "0.92", "0.75"]
    assert len(sizes) >= 2


def test_boxes_have_their_density_and_no_close_images(molecules):
    from kdframe.cells import neighbour_pairs

    monomers = sorted((gen.monomer(c) for c in molecules.values()), key=lambda m: m.name)
    for index in range(3):
        box = gen.box_configuration(index, monomers, SETTINGS)
        _sane(box)
        cell = box.cell[0]
        density = atomic_masses[box.species].sum() * gen.AMU_PER_A3_IN_G_CM3 / np.linalg.det(cell)
        target = float(box.origins[0].split(":")[1])
        assert 0.8 <= target <= 1.1 and density == pytest.approx(target, rel=0.01)
        assert 0.85 * 48 <= len(box.species) <= 1.15 * 48 + 12
        i, j, shift = neighbour_pairs(box.positions[0], 1.0, cell, np.ones(3, bool))
        d = np.linalg.norm(box.positions[0][j] - box.positions[0][i] + shift @ cell, axis=1)
        assert len(d) == 0 or d.min() >= gen.MIN_DISTANCE
        centres = np.array([box.positions[0][box.molecule_of == m].mean(axis=0) for m in range(box.molecule_of.max() + 1)])
        assert (centres >= 0).all() and (centres <= cell[0, 0]).all()


def test_check_refuses_clashes_broken_bonds_and_close_images():
    species = np.array([8, 1, 1])
    water = np.array([[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]])
    one, bonds = np.zeros(3, dtype=int), np.array([[0, 1], [0, 2]])
    assert gen.check(species, water, one, bonds) is None
    assert "broken" in gen.check(species, water * [1, 2, 1], one, bonds)
    two = np.concatenate([water, water + [0.5, 0.0, 0.0]])
    assert "apart" in gen.check(np.tile(species, 2), two, np.repeat([0, 1], 3), np.concatenate([bonds, bonds + 3]),
                                contacts=True)
    assert "1 and 2 0.49 Å apart" in gen.check(species, water, one, bonds, np.eye(3) * 2.0)  # H and H's image
    assert "(or images) bonded" in gen.check(species, water, one, bonds, np.diag([10.0, 10.0, 1.5]))
    assert gen.check(species, water, one, bonds, np.eye(3) * 6.0) is None


def _run(out: Path, kill_at: int | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if kill_at is not None:
        env[gen.KILL_ENV] = str(kill_at)
    smiles = [f"{n}:{s}" for n, s in PAIRS]
    return subprocess.run([sys.executable, "-m", "kdframe.cli", "data", "generate", str(out), "--smiles", *smiles,
                           *ARGS], env=env, capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_generate_resumes_after_sigkill_with_identical_output(tmp_path, capsys):
    reference = tmp_path / "ref" / "out.h5"
    reference.parent.mkdir()
    assert main(["data", "generate", str(reference), "--smiles", *[f"{n}:{s}" for n, s in PAIRS], *ARGS]) == 0
    err = capsys.readouterr().err
    assert "skipped bad_ring: C1CC: invalid SMILES" in err and "skipped trimethylsilane" in err and "Si outside" in err
    report = reference.with_name("out.h5.skipped.txt").read_text().splitlines()
    assert [line.split("\t")[0] for line in report] == ["bad_ring", "trimethylsilane"]
    assert not reference.with_name("out.h5.parts").exists()

    out = tmp_path / "run" / "out.h5"
    killed = _run(out, kill_at=4)  # SIGKILL while the 4th chunk is being written (molecules 3/3)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    parts = out.with_name("out.h5.parts")
    assert not out.exists() and len((parts / "journal.jsonl").read_text().splitlines()) == 3
    assert list(parts.glob(".*.tmp"))  # the unfinished shard
    resumed = _run(out)
    assert resumed.returncode == 0, resumed.stderr
    assert "2 chunks made, 3 resumed" in resumed.stdout  # molecules 3/3, clusters, boxes
    assert out.read_bytes() == reference.read_bytes()
    assert out.with_name("out.h5.skipped.txt").read_text().splitlines() == report
    assert not parts.exists()

    data = read_dataset(out, {})
    assert isinstance(data, PackedDataset) and data.periodic and data.pbc.any(axis=1).sum() == 2
    kinds = sorted({o.split(":")[0] for o in data.origin})
    assert kinds == ["box", "cluster", "conf", "rattle", "torsion"] and sum(o.startswith("cluster") for o in data.origin) == 6
    batch = data.batch(np.arange(len(data)))
    assert batch.cell.shape == (len(data), 3, 3) and batch.pbc[-1].all() and not batch.pbc[0].any()
    assert set(data.molecule_names) >= {"water", "ethanol", "acetic_acid", "methylamine"}
    assert "bad_ring" not in data.molecule_names


def test_a_molecules_configurations_do_not_depend_on_the_list(tmp_path, capsys):
    settings = gen.GenerateSettings(conformers=1, rattle=2, torsions=2, chunk_molecules=1, seed=3)
    a = gen.generate(tmp_path / "a.h5", PAIRS[:3], settings, log=lambda _: None)
    b = gen.generate(tmp_path / "b.h5", [PAIRS[2], ("propane", "CCC"), PAIRS[1]], settings, log=lambda _: None)
    assert a.configurations == 3 + 5 + 5 and b.configurations > 0
    x, y = PackedDataset.open(a.output, {}), PackedDataset.open(b.output, {})
    for name in ("ethanol", "acetic_acid"):
        cx = np.flatnonzero(x.molecule == x.molecule_names.index(name))
        cy = np.flatnonzero(y.molecule == y.molecule_names.index(name))
        assert x.origin[cx].tolist() == y.origin[cy].tolist()
        np.testing.assert_array_equal(x.batch(cx).positions.numpy(), y.batch(cy).positions.numpy())


def test_existing_output_and_changed_settings_are_refused(tmp_path):
    settings = gen.GenerateSettings(conformers=1, rattle=1, torsions=0)
    out = tmp_path / "o.h5"
    gen.generate(out, PAIRS[:1], settings, log=lambda _: None)
    with pytest.raises(DataError, match="exists"):
        gen.generate(out, PAIRS[:1], settings, log=lambda _: None)
    gen.generate(out, PAIRS[:2], settings, force=True, log=lambda _: None)
    assert len(PackedDataset.open(out, {})) == 2 + 2
    parts = gen.parts_dir(tmp_path / "p.h5")
    parts.mkdir()
    (parts / "settings.json").write_text('{"settings": {}}')
    with pytest.raises(DataError, match="unfinished run with other settings"):
        gen.generate(tmp_path / "p.h5", PAIRS[:1], settings, log=lambda _: None)
    with h5py.File(out, "r") as f:
        assert "generate.settings" in f.attrs and f.attrs["format"] == "kdframe-packed-2"
