"""Pretrained ANI-1x / ANI-1ccx / ANI-2x (8 members each) as kdframe teachers, usable offline.

``kdframe models fetch NAME`` downloads the model's MIT-licensed NeuroChem files once, converts them
with torchani's NeuroChem reader and saves each member as a kdframe ``Potential`` in
``<cache>/models/<name>/member_<i>.pt`` (cache: ``$KDFRAME_CACHE`` or ``~/.cache/kdframe``).

Sources: ANI-1x and ANI-1ccx from the torchani 2.0 wheel on PyPI (never installed; checked by the
wheel's sha256). ANI-2x is in no torchani wheel or sdist on PyPI (2.2 to 2.2.4 ship its files as
zero-byte placeholders and download them at run time), so it comes from the archive torchani 2.2
itself downloads, the ``ani-2x`` tag of github.com/aiqm/ani-model-zoo; GitHub does not promise
stable archive bytes, so the model's extracted files are checked instead (sha256 of the sorted
``path  sha256`` lines, :func:`content_sha256`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ase.data import atomic_numbers

from kdframe.errors import ConfigError, DataError
from kdframe.io import atomic_write_text, file_sha256
from kdframe.potential import Potential
from kdframe.units import HARTREE_TO_EV

from .architecture import AniArchitecture
from .sharing import AniEnsemble


@dataclass(frozen=True)
class Source:
    """Where a model's NeuroChem files come from and how they are checked."""

    file: str  # name of the download in <cache>/downloads
    description: str  # for messages and the manifest
    requirement: str | None = None  # pip requirement of a wheel (downloaded with pip)
    url: str | None = None  # plain https download (an archive)
    sha256: str | None = None  # of the downloaded file (stable for PyPI wheels)
    content_sha256: dict[str, str] | None = None  # per resource stem, of its extracted files


TORCHANI_2_0 = Source(
    file="torchani-2.0-py3-none-any.whl", requirement="torchani==2.0",
    description="torchani==2.0 (torchani-2.0-py3-none-any.whl, MIT)",
    sha256="87db70affc847c3aa26081607166580a6e6b01f33e09218e2c5b26f66b45ed89")
ANI_MODEL_ZOO_2X = Source(
    file="ani-model-zoo-ani-2x.zip", url="https://github.com/aiqm/ani-model-zoo/archive/ani-2x.zip",
    description="github.com/aiqm/ani-model-zoo tag ani-2x (commit 3a3368bb, MIT), the download of torchani 2.2",
    content_sha256={"ani-2x_8x": "1e76c6f0ed1d824f8d981120d2e8152dfa34f0e2107276e2a961717f876e518c"})

PRETRAINED = {"ani1x": "ani-1x_8x", "ani1ccx": "ani-1ccx_8x", "ani2x": "ani-2x_8x"}  # name -> NeuroChem stem
SOURCES = {"ani1x": TORCHANI_2_0, "ani1ccx": TORCHANI_2_0, "ani2x": ANI_MODEL_ZOO_2X}
# kept for callers of the ANI-1x/1ccx wheel
WHEEL_REQUIREMENT, WHEEL_FILE, WHEEL_SHA256 = TORCHANI_2_0.requirement, TORCHANI_2_0.file, TORCHANI_2_0.sha256
RESOURCES = "torchani/resources/"  # inside the torchani wheel
MANIFEST = "manifest.json"


def cache_root() -> Path:
    """``$KDFRAME_CACHE`` or ``~/.cache/kdframe``."""
    return Path(os.environ.get("KDFRAME_CACHE") or Path.home() / ".cache" / "kdframe")


def model_dir(name: str, root: Path | None = None) -> Path:
    """Where the converted members of a pretrained model live."""
    if name not in PRETRAINED:
        raise ConfigError("pretrained model", f"unknown name {name!r}", PRETRAINED)
    return (root or cache_root()) / "models" / name


def content_sha256(base: Path, stem: str) -> str:
    """sha256 of the sorted lines ``<relative path>  <sha256>`` of ``<stem>.info`` and every file under ``<stem>/``."""
    files = [base / f"{stem}.info", *(p for p in (base / stem).rglob("*") if p.is_file())]
    lines = sorted(f"{p.relative_to(base).as_posix()}  {file_sha256(p)}" for p in files if p.is_file())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def download_wheel(dest: Path, source: Source = TORCHANI_2_0) -> Path:
    """``pip download --no-deps <requirement> -d dest``; the wheel's path (checked against its sha256)."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", source.requirement,
           "-d", str(dest)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest / source.file
    if run.returncode != 0 or not wheel.is_file():
        tail = (run.stderr or run.stdout).strip().splitlines()[-3:]
        raise DataError(f"could not download {source.requirement} with pip ({' | '.join(tail)})")
    if file_sha256(wheel) != source.sha256:
        raise DataError(f"{wheel}: sha256 differs from the published {source.description}")
    return wheel


def download_archive(dest: Path, source: Source) -> Path:
    """An https download of ``source.url`` into ``dest`` (its content is checked when extracted)."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / source.file
    try:
        with urllib.request.urlopen(source.url, timeout=60) as response, open(target, "wb") as f:
            shutil.copyfileobj(response, f)
    except OSError as exc:
        raise DataError(f"could not download {source.url} ({exc}); download it elsewhere and pass it with "
                        f"--wheel FILE") from None
    return target


def cached_wheel(root: Path | None = None, source: Source = TORCHANI_2_0) -> Path:
    """The source file kept in ``<cache>/downloads``, downloaded on first use."""
    downloads = (root or cache_root()) / "downloads"
    path = downloads / source.file
    if path.is_file() and (source.sha256 is None or file_sha256(path) == source.sha256):
        return path
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".download-") as tmp:
        got = download_wheel(Path(tmp), source) if source.requirement else download_archive(Path(tmp), source)
        os.replace(got, path)
    return path


def _zip_prefix(names: list[str], stem: str, where: Path) -> str:
    """The folder of ``<stem>.info`` in an archive (``torchani/resources/``, ``ani-model-zoo-ani-2x/resources/``)."""
    infos = sorted((m for m in names if m == f"{stem}.info" or m.endswith(f"/{stem}.info")), key=len)
    if not infos:
        raise DataError(f"{where}: no {stem}.info inside")
    return infos[0][: -len(f"{stem}.info")]


def extract(wheel: Path, name: str, dest: Path) -> Path:
    """Extract ``<stem>.info`` and ``<stem>/`` of a model from a wheel, a zip archive or a folder (a clone of
    ani-model-zoo) into ``dest``, check them; the info file's path."""
    stem, source = PRETRAINED[name], SOURCES[name]
    if wheel.is_dir():
        found = [d for d in (wheel, wheel / "resources", wheel / "torchani" / "resources")
                 if (d / f"{stem}.info").is_file()]
        if not found:
            raise DataError(f"{wheel}: no {stem}.info in it, its resources/ or torchani/resources/")
        (dest / stem).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(found[0] / f"{stem}.info", dest / f"{stem}.info")
        shutil.copytree(found[0] / stem, dest / stem, dirs_exist_ok=True)
    else:
        try:
            z = zipfile.ZipFile(wheel)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"{wheel}: not a zip archive or wheel ({exc})") from None
        with z:
            prefix = _zip_prefix(z.namelist(), stem, wheel)
            for m in z.namelist():
                rel = m[len(prefix):]
                if not m.startswith(prefix) or m.endswith("/") or ".." in Path(m).parts:
                    continue
                if rel != f"{stem}.info" and not rel.startswith(f"{stem}/"):
                    continue
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(m))
    info = dest / f"{stem}.info"
    if info.stat().st_size == 0:
        raise DataError(f"{wheel}: {stem}.info is empty (torchani 2.2 wheels ship ANI-2x as zero-byte placeholders); "
                        f"use {source.description}")
    expected = (source.content_sha256 or {}).get(stem)
    if expected is not None and content_sha256(dest, stem) != expected:
        raise DataError(f"{wheel}: the files of {stem} differ from {source.description} "
                        f"(content sha256 {expected[:12]}...)")
    return info


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


def aev_parameters(const_file: Path) -> tuple[dict[str, Any], list[str]]:
    """The AEV block (``model.aev`` of the torchani architecture) and element symbols of a NeuroChem ``.params``
    file, in the file's element order (ANI-2x: H, C, N, O, S, F, Cl)."""
    from .model import neurochem

    consts, symbols = neurochem.load_aev_constants_and_symbols(const_file)
    aev = {"radial_cutoff": consts.radial_cutoff, "radial_eta": consts.radial_eta,
           "radial_shifts": list(consts.radial_shifts), "angular_cutoff": consts.angular_cutoff,
           "angular_eta": consts.angular_eta, "angular_zeta": consts.angular_zeta,
           "angular_shifts": list(consts.angular_shifts), "angular_sections": list(consts.sections)}
    return aev, list(symbols)


def convert(info_file: Path) -> list[Potential]:
    """Each member of a NeuroChem ensemble as a kdframe Potential (architecture ``torchani``, head ``energy``)."""
    from .model import TightCELU, neurochem

    info = read_info(info_file)
    aev, symbols = aev_parameters(info.const)
    unknown = [s for s in symbols if s not in atomic_numbers]
    if unknown:
        raise DataError(f"{info.const}: unknown element symbols {unknown}")
    species = [atomic_numbers[s] for s in symbols]
    sae = read_sae(info.sae)
    missing = [s for s in symbols if s not in sae]
    if missing:
        raise DataError(f"{info.sae}: no self atomic energy for {missing}")
    reference = torch.zeros(max(species) + 1, 1, dtype=torch.float64)
    for s, z in zip(symbols, species):
        reference[z, 0] = sae[s] * HARTREE_TO_EV
    potentials = []
    for i in range(info.ensemble_size):
        try:
            member = neurochem.load_member(symbols, neurochem.model_dir_from_prefix(info.ensemble_prefix, i))
        except (neurochem.NeurochemParseError, OSError, struct.error) as exc:
            raise DataError(f"{info_file}: member {i}: {exc}") from None
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
    """Convert a pretrained ensemble into the cache (atomically: all members or none); its directory.

    ``wheel``: a local copy of the source (the torchani 2.0 wheel for ANI-1x/1ccx; the ani-model-zoo ``ani-2x``
    zip or a clone of it for ANI-2x) instead of downloading it."""
    target = model_dir(name, root)
    source = SOURCES[name]
    if (target / MANIFEST).is_file() and not force:
        return target
    if wheel is not None and not wheel.exists():
        raise DataError(f"{wheel}: file not found")
    if wheel is not None and source.sha256 is not None and (wheel.is_dir() or file_sha256(wheel) != source.sha256):
        raise DataError(f"{wheel}: not {source.description} (sha256 {source.sha256[:12]}...)")
    wheel = wheel or cached_wheel(root, source)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}-") as tmp:
        staging = Path(tmp) / "staging"
        members = convert(extract(wheel, name, Path(tmp) / "neurochem"))
        for i, member in enumerate(members):
            member.save(staging / f"member_{i}.pt")
        checksum = ({"wheel_sha256": source.sha256} if source.sha256
                    else {"content_sha256": (source.content_sha256 or {}).get(PRETRAINED[name])})
        atomic_write_text(staging / MANIFEST, json.dumps({
            "name": name, "members": len(members), "source": source.description,
            "resource": PRETRAINED[name], **checksum,
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
                        f"run `kdframe models fetch {name}` first (once, needs the network)")
    count = json.loads(manifest.read_text())["members"]
    return [Potential.load(directory / f"member_{i}.pt") for i in range(count)]


def load_pretrained_ensemble(name: str, root: Path | None = None) -> AniEnsemble:
    """The ensemble mean of a pretrained model, computing the AEV once for all members."""
    return AniEnsemble(load_pretrained(name, root))
