"""Pretrained ANI-1x / ANI-1ccx (8 members each) as kdframe teachers, usable offline.

``kdframe models fetch ani1ccx`` downloads the MIT-licensed torchani 2.0 wheel from PyPI
once (it is never installed), extracts the NeuroChem files of the model, loads them
with torchani's NeuroChem reader and saves each member as a kdframe ``Potential`` in
``<cache>/models/<name>/member_<i>.pt`` (cache: ``$KDFRAME_CACHE`` or ``~/.cache/kdframe``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from ase.data import atomic_numbers

from kdframe.errors import ConfigError, DataError
from kdframe.io import atomic_write_text
from kdframe.potential import Potential
from kdframe.units import HARTREE_TO_EV

from .architecture import AniArchitecture
from .sharing import AniEnsemble

PRETRAINED = {"ani1x": "ani-1x_8x", "ani1ccx": "ani-1ccx_8x"}  # kdframe name -> NeuroChem resource stem
WHEEL_REQUIREMENT = "torchani==2.0"
WHEEL_FILE = "torchani-2.0-py3-none-any.whl"
WHEEL_SHA256 = "87db70affc847c3aa26081607166580a6e6b01f33e09218e2c5b26f66b45ed89"
RESOURCES = "torchani/resources/"  # inside the wheel
MANIFEST = "manifest.json"


def cache_root() -> Path:
    return Path(os.environ.get("KDFRAME_CACHE") or Path.home() / ".cache" / "kdframe")


def model_dir(name: str, root: Path | None = None) -> Path:
    if name not in PRETRAINED:
        raise ConfigError("pretrained model", f"unknown name {name!r}", PRETRAINED)
    return (root or cache_root()) / "models" / name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_wheel(dest: Path) -> Path:
    """``pip download --no-deps torchani==2.0 -d dest``; the wheel's path (checked against its sha256)."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", WHEEL_REQUIREMENT,
           "-d", str(dest)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest / WHEEL_FILE
    if run.returncode != 0 or not wheel.is_file():
        tail = (run.stderr or run.stdout).strip().splitlines()[-3:]
        raise DataError(f"could not download {WHEEL_REQUIREMENT} with pip ({' | '.join(tail)})")
    if _sha256(wheel) != WHEEL_SHA256:
        raise DataError(f"{wheel}: sha256 differs from the published torchani 2.0 wheel")
    return wheel


def cached_wheel(root: Path | None = None) -> Path:
    """The torchani 2.0 wheel kept in ``<cache>/downloads``, downloaded on first use."""
    downloads = (root or cache_root()) / "downloads"
    wheel = downloads / WHEEL_FILE
    if wheel.is_file() and _sha256(wheel) == WHEEL_SHA256:
        return wheel
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmp:
        os.replace(download_wheel(Path(tmp)), wheel)
    return wheel


def extract(wheel: Path, name: str, dest: Path) -> Path:
    """Extract ``<stem>.info`` and ``<stem>/`` of a model from the wheel into ``dest``; the info file's path."""
    stem = PRETRAINED[name]
    with zipfile.ZipFile(wheel) as z:
        members = [m for m in z.namelist()
                   if m == f"{RESOURCES}{stem}.info" or m.startswith(f"{RESOURCES}{stem}/")]
        if f"{RESOURCES}{stem}.info" not in members:
            raise DataError(f"{wheel}: no {RESOURCES}{stem}.info inside")
        for m in members:
            if ".." in Path(m).parts or m.endswith("/"):
                continue
            target = dest / m[len(RESOURCES):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(m))
    return dest / f"{stem}.info"


def read_info(info_file: Path) -> Any:
    """torchani's ``NeurochemInfo``, with paths relative to the info file (torchani's own
    ``from_info_file`` resolves them under its data directory)."""
    from .model import neurochem

    const, sae, prefix, size = [line.strip() for line in info_file.read_text().splitlines()[:4]]
    base = info_file.parent
    return neurochem.NeurochemInfo(sae=base / sae, const=base / const, ensemble_prefix=base / prefix,
                                   ensemble_size=int(size))


def read_sae(sae_file: Path) -> dict[str, float]:
    """Self atomic energies (Hartree) in full float64 precision (torchani keeps them in float32)."""
    energies = {}
    for line in sae_file.read_text().splitlines():
        if "=" in line:
            key, value = line.split("=")
            energies[key.split(",")[0].strip()] = float(value)
    return energies


def convert(info_file: Path) -> list[Potential]:
    """Each member of a NeuroChem ensemble as a kdframe Potential (architecture ``torchani``, head ``energy``)."""
    from .model import TightCELU, neurochem

    info = read_info(info_file)
    consts, symbols = neurochem.load_aev_constants_and_symbols(info.const)
    species = [atomic_numbers[s] for s in symbols]
    aev = {"radial_cutoff": consts.radial_cutoff, "radial_eta": consts.radial_eta,
           "radial_shifts": list(consts.radial_shifts), "angular_cutoff": consts.angular_cutoff,
           "angular_eta": consts.angular_eta, "angular_zeta": consts.angular_zeta,
           "angular_shifts": list(consts.angular_shifts), "angular_sections": list(consts.sections)}
    sae = read_sae(info.sae)
    reference = torch.zeros(max(species) + 1, 1, dtype=torch.float64)
    for s, z in zip(symbols, species):
        reference[z, 0] = sae[s] * HARTREE_TO_EV
    potentials = []
    for i in range(info.ensemble_size):
        member = neurochem.load_member(symbols, neurochem.model_dir_from_prefix(info.ensemble_prefix, i))
        for s in symbols:
            if not isinstance(member[s].activation, TightCELU) or member[s].final_layer.out_features != 1:
                raise DataError(f"{info_file}: member {i} element {s} is not a CELU(0.1) network with one output")
        hidden = {s: [int(layer.out_features) for layer in member[s].layers] for s in symbols}
        hp = {"aev": aev, "hidden": hidden, "activation": "celu", "celu_alpha": 0.1, "species_order": species,
              "dtype": "float32"}
        potential = Potential(AniArchitecture(), hp, species, ("energy",), reference_energies=reference)
        for s in symbols:
            potential.net.networks[s].load_state_dict(member[s].state_dict())
        potentials.append(potential)
    return potentials


def fetch(name: str, root: Path | None = None, wheel: Path | None = None, force: bool = False) -> Path:
    """Convert a pretrained ensemble into the cache (atomically: all members or none); its directory."""
    target = model_dir(name, root)
    if (target / MANIFEST).is_file() and not force:
        return target
    if wheel is not None and not wheel.is_file():
        raise DataError(f"{wheel}: wheel file not found")
    if wheel is not None and _sha256(wheel) != WHEEL_SHA256:
        raise DataError(f"{wheel}: not the torchani 2.0 wheel ({WHEEL_FILE}, sha256 {WHEEL_SHA256[:12]}...)")
    wheel = wheel or cached_wheel(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        staging = Path(tmp) / "staging"
        members = convert(extract(wheel, name, Path(tmp) / "neurochem"))
        for i, member in enumerate(members):
            member.save(staging / f"member_{i}.pt")
        atomic_write_text(staging / MANIFEST, json.dumps({
            "name": name, "members": len(members), "source": f"{WHEEL_REQUIREMENT} ({WHEEL_FILE}, MIT)",
            "resource": f"{RESOURCES}{PRETRAINED[name]}", "wheel_sha256": WHEEL_SHA256,
            "species": members[0].species, "heads": members[0].heads, "units": "eV, Angstrom",
        }, indent=2) + "\n")
        if target.exists():
            os.replace(target, Path(tmp) / "old")
        os.replace(staging, target)
    return target


def load_pretrained(name: str, root: Path | None = None) -> list[Potential]:
    """The members of a fetched pretrained ensemble, one kdframe Potential each."""
    directory = model_dir(name, root)
    manifest = directory / MANIFEST
    if not manifest.is_file():
        raise DataError(f"pretrained model {name!r} is not in the cache ({directory}): "
                        f"run `kdframe models fetch {name}` first (once, needs PyPI)")
    count = json.loads(manifest.read_text())["members"]
    return [Potential.load(directory / f"member_{i}.pt") for i in range(count)]


def load_pretrained_ensemble(name: str, root: Path | None = None) -> AniEnsemble:
    """The ensemble mean of a pretrained model, computing the AEV once for all members."""
    return AniEnsemble(load_pretrained(name, root))
