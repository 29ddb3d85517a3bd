"""``kdframe data``: sample geometries from SMILES, label them with a level of theory, inspect files.

Subcommands of ``kdframe data``: sample, generate, label, merge, pack, info.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
from ase.units import Hartree, kcal, mol

from .. import __version__, hookimpl
from ..config import resolve_path
from ..errors import ConfigError, DataError
from ..data.ani_layout import check_hartree, energy_ratios, molecule_groups, molecule_species, open_hdf5, real_numbers
from ..data.packed import describe as describe_packed, is_packed
from ..io import atomic_write, warn

KCAL_MOL_PER_HARTREE = Hartree / (kcal / mol)


@hookimpl
def register_commands(subparsers) -> None:
    parser = subparsers.add_parser("data", help="sample, label and inspect quantum-chemistry data (ANI-layout HDF5)")
    add_data_arguments(parser)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", required=True)

    p = sub.add_parser("sample", help="non-equilibrium geometries from SMILES (RDKit + GFN2-xTB normal modes / MD)")
    p.add_argument("output", help="HDF5 file to write (ANI layout, one group per molecule)")
    p.add_argument("--smiles", nargs="+", default=[], metavar="NAME:SMILES", help="molecules, NAME:SMILES or SMILES (named by formula)")
    p.add_argument("--smiles-file", help="text file with 'NAME SMILES' per line (# comments)")
    p.add_argument("--conformers", type=int, default=4, help="RDKit embeddings per molecule")
    p.add_argument("--max-conformers", type=int, default=4, help="distinct xTB-optimised conformers kept")
    p.add_argument("--normal-modes", type=int, default=24, help="normal-mode samples per molecule")
    p.add_argument("--nms-temperatures", type=float, nargs="+", default=[300.0, 600.0, 1000.0], metavar="K")
    p.add_argument("--md-frames", type=int, default=12, help="xTB MD frames per molecule")
    p.add_argument("--md-temperatures", type=float, nargs="+", default=[500.0, 1000.0], metavar="K")
    p.add_argument("--no-optimized", action="store_true", help="do not include the optimised conformers")
    p.add_argument("--method", default="xtb", help="labeler used for optimisation, Hessian and MD")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=positive_int, default=1,
                   help="processes sampling molecules, one thread each (1: this process; the same file whatever "
                        "the number)")
    p.add_argument("--append", action="store_true", help="add molecules to an existing file (existing names kept); "
                   "so a killed run carries on (the file is written every 5 minutes)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("generate", help="teacher-free configurations at scale (RDKit conformers, rattles, torsion "
                       "scans, close clusters, periodic liquid boxes) into a packed file; resumable")
    p.add_argument("output", help="packed HDF5 file to write (atomically, after all chunks are done)")
    p.add_argument("--smiles", nargs="+", default=[], metavar="NAME:SMILES", help="molecules, NAME:SMILES or SMILES")
    p.add_argument("--smiles-file", help="text file with 'NAME SMILES' per line (# comments), e.g. "
                   "data/molecules/organic_chno.smi")
    p.add_argument("--conformers", type=non_negative_int, default=2, help="ETKDG conformers per molecule, MMFF-relaxed")
    p.add_argument("--rattle", type=non_negative_int, default=8, help="rattled configurations per molecule")
    p.add_argument("--rattle-amplitudes", type=float, nargs="+", default=[0.05, 0.1, 0.15, 0.2, 0.25], metavar="Å",
                   help="RMS displacements per atom, cycled")
    p.add_argument("--torsions", type=non_negative_int, default=4, help="torsion-scan configurations per molecule")
    p.add_argument("--no-torsion-relax", action="store_true", help="rigid torsion scans (no constrained MMFF relaxation)")
    p.add_argument("--clusters", type=non_negative_int, default=0, help="close-contact clusters of 2-4 molecules, in all")
    p.add_argument("--cluster-scan", type=positive_int, default=4,
                   help="configurations per cluster orientation (contact from 1.1 to 0.75 x the vdW sums)")
    p.add_argument("--boxes", type=non_negative_int, default=0, help="periodic liquid boxes of mixtures, in all")
    p.add_argument("--box-atoms", type=positive_int, default=200, help="about this many atoms per box")
    p.add_argument("--densities", type=float, nargs=2, default=[0.8, 1.1], metavar=("LOW", "HIGH"),
                   help="box densities drawn in this range (g/cm3)")
    p.add_argument("--box-rattle", type=float, default=0.0, metavar="Å", help="RMS rattle per atom of the boxes")
    p.add_argument("--elements", default="H,C,N,O", help="elements allowed; molecules with others are skipped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk-molecules", type=positive_int, default=16, help="molecules per resumable chunk")
    p.add_argument("--workers", type=positive_int, default=1, help="processes making chunks (same output)")
    p.add_argument("--keep-parts", action="store_true", help="keep OUTPUT.parts/ (shards and journal) after merging")
    p.add_argument("--force", action="store_true",
                   help="replace an existing OUTPUT, or discard an unfinished run with other settings")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("label", help="add a level of theory (<method>.energy/.forces, or .hessian); resumable")
    p.add_argument("file")
    p.add_argument("--method", required=True, help="labeler, e.g. xtb, wb97x_dz, mp2_dz, ccsd(t)_dz, "
                   "or a pretrained ensemble (ani1ccx, ani1x, ani2x; `kdframe models fetch NAME` first)")
    p.add_argument("--workers", type=non_negative_int, default=os.cpu_count() or 1,
                   help="processes, one thread each (0: in this process)")
    p.add_argument("--molecules", help="comma-separated group names to label (default: all)")
    p.add_argument("--per-molecule", type=cap, help="at most this many conformations per molecule, evenly spread")
    p.add_argument("--limit", type=cap, help="at most this many conformations in all (after ordering)")
    p.add_argument("--origin", help="only conformations whose sampling origin starts with this (e.g. opt, nms, md)")
    p.add_argument("--order", default="size", choices=["size", "round-robin", "file"],
                   help="size: smallest molecules first; round-robin: one of each molecule in turn")
    p.add_argument("--merge-every", type=non_negative_int, default=25,
                   help="merge finished items into the file every N items, in about a tenth of the time at most "
                        "(0: only every 10 minutes and at the end)")
    p.add_argument("--retry-failed", action="store_true", help="recompute items recorded as failed")
    p.add_argument("--hessian", action="store_true",
                   help="<method>.hessian (3N x 3N, Hartree/Å²): central differences of a QC method's forces, "
                        "autograd for a pretrained ensemble")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--journals", metavar="DIR", help="directory holding the journals FILE.labelling/ (default: the file's own; the bundled datasets': data/labelling)")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("merge", help="fold finished labelling journals into the file (atomic)")
    p.add_argument("file")
    p.add_argument("--journals", metavar="DIR", help="directory holding the journals FILE.labelling/ (default: the file's own; the bundled datasets': data/labelling)")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("pack", help="an ANI-layout file as one flat, chunked file that training streams from disk")
    p.add_argument("source", help="ANI-layout HDF5 file, or bundled:NAME")
    p.add_argument("target", help="packed HDF5 file to write (atomically)")
    p.add_argument("--units", default="auto", choices=["auto", "hartree", "ev"],
                   help="energy unit of the source file (auto: Hartree, refused when the energies look like eV)")
    p.add_argument("--force", action="store_true", help="replace an existing target (never the source)")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("info", help="molecules, conformations, labels present, energy ranges, spread percentiles")
    p.add_argument("file", help="a data file, or bundled:NAME")
    p.add_argument("--per-molecule", action="store_true", help="one line per molecule")
    p.add_argument("--journals", metavar="DIR", help="directory holding the journals FILE.labelling/ (default: the file's own; the bundled datasets': data/labelling)")
    p.set_defaults(func=cmd_info)


def _integer_at_least(minimum: int, hint: str = "") -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""
    valid = ", ".join(str(minimum + i) for i in range(3)) + ", ..."

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer (valid: {valid})") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} (valid: {valid}{hint})")
        return value

    return parse


positive_int = _integer_at_least(1)
non_negative_int = _integer_at_least(0)
# a cap on how many to take: 0 or a negative one would select everything, or all but some
cap = _integer_at_least(1, "; omit the option for all")


# ----------------------------------------------------------------------------- sample


def parse_smiles(entries: Sequence[str], smiles_file: str | None) -> list[tuple[str, str]]:
    """(name, SMILES) pairs from NAME=SMILES arguments and a 'NAME SMILES' file."""
    pairs: list[tuple[str, str]] = []
    if smiles_file:
        path = Path(smiles_file)
        if not path.is_file():
            raise DataError(f"{path}: SMILES file not found")
        for n, line in enumerate(path.read_text().splitlines(), 1):
            line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()  # '#' inside SMILES is a triple bond
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise DataError(f"{path}:{n}: expected 'NAME SMILES', got {line!r}")
            pairs.append((parts[0], parts[1]))
    for entry in entries:
        name, sep, smiles = entry.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_\-+,()']+", name) or "[" in name:
            name, smiles = "", entry
        pairs.append((name or _formula(smiles), smiles))
    if not pairs:
        raise ConfigError("kdframe data sample", "no molecules given (use --smiles or --smiles-file)")
    names = [n for n, _ in pairs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"duplicate molecule names: {', '.join(dupes)}")
    return pairs


def _formula(smiles: str) -> str:
    from rdkit import Chem
    from rdkit.Chem.rdMolDescriptors import CalcMolFormula

    m = Chem.MolFromSmiles(smiles)
    if m is None:
        raise DataError(f"invalid SMILES {smiles!r}")
    return CalcMolFormula(Chem.AddHs(m))


SAMPLE_WRITE_SECONDS = 300


def cmd_sample(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..labeler import get_labeler
    from ..sampling import SamplingSettings, sample_molecules

    pairs = parse_smiles(args.smiles, args.smiles_file)
    out = Path(args.output)
    if out.exists() and not args.append:
        raise DataError(f"{out}: exists (use --append to add molecules, or remove it)")
    settings = SamplingSettings(conformers=args.conformers, max_conformers=args.max_conformers,
                                normal_modes=args.normal_modes, nms_temperatures=tuple(args.nms_temperatures),
                                md_frames=args.md_frames, md_temperatures=tuple(args.md_temperatures),
                                include_optimized=not args.no_optimized, seed=args.seed, method=args.method)
    existing = set()
    if out.exists():
        with h5py.File(out, "r") as f:
            existing = set(f.keys())
            before = json.loads(f.attrs.get("provenance.sample", "{}")).get("settings")
        now = json.loads(json.dumps(asdict(settings)))
        if before is not None and before != now:  # one file, one set of sampling settings
            changed = sorted(k for k in now if before.get(k) != now[k])
            raise DataError(f"{out}: sampled with other settings ({', '.join(f'{k} {before.get(k)}' for k in changed)}); "
                            "give the same options to add to it, or write a new file")
    labeler = get_labeler(args.method)
    todo = [(n, s) for n, s in pairs if n not in existing]
    _check_smiles(todo)  # before the progress bar, so an error is its own line
    # Written every few minutes (each molecule's sampling is seeded by --seed and its SMILES), so a killed run loses
    # at most those minutes and `--append` carries on with identical results.
    pending, skipped, counts, written = [], [], [], time.monotonic()

    def flush() -> None:
        write_sampled(out, pending, settings, labeler)
        counts.extend(len(m.coordinates) for m in pending)
        pending.clear()

    try:
        results = sample_molecules(todo, settings, labeler, args.workers)
        for name, result in tqdm(results, total=len(todo), desc="sampling", unit="mol"):
            if isinstance(result, str):
                skipped.append(name)
                warn(f"{name}: skipped ({result})")
            else:
                pending.append(result)
            if pending and time.monotonic() - written > SAMPLE_WRITE_SECONDS:
                flush()
                written = time.monotonic()
    except BaseException:  # an interrupt, a worker killed: keep what is done; --append carries on
        if pending:
            flush()
        if counts:
            warn(f"{out}: {len(counts)} molecules kept; add --append to the same command to carry on")
        raise
    if pending:
        flush()
    sampled = sum(counts)
    print(f"{out}: {len(todo) - len(skipped)} molecules, {sampled} conformations added"
          + (f"; {len(skipped)} skipped: {', '.join(skipped)}" if skipped else ""))
    return 0


def _check_smiles(molecules: Sequence[tuple[str, str]]) -> None:
    """Every SMILES parses (RDKit), or one error naming the first that does not."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    for name, smiles in molecules:
        if Chem.MolFromSmiles(smiles) is None:
            raise DataError(f"{name}: invalid SMILES {smiles!r}")


def write_sampled(path: Path, molecules: list, settings, labeler) -> None:
    """Write (or extend) an ANI-layout file atomically; labels of existing groups are kept."""
    import rdkit

    def write(fh) -> None:
        with h5py.File(fh, "w") as f:
            if path.exists():
                with h5py.File(path, "r") as old:
                    for key in old:
                        old.copy(old[key], f, name=key)
                    f.attrs.update(dict(old.attrs))
            for m in molecules:
                g = f.create_group(m.name)
                g.create_dataset("atomic_numbers", data=np.asarray(m.atomic_numbers, dtype=np.int64))
                g.create_dataset("coordinates", data=np.asarray(m.coordinates, dtype=np.float64))
                g.attrs["smiles"] = m.smiles
                g.attrs["origins"] = json.dumps(m.origins)
            f.attrs["layout"] = "ANI: one group per molecule; Hartree, Angstrom; NaN where a label is missing"
            f.attrs["provenance.sample"] = json.dumps({
                "settings": asdict(settings), "labeler_settings": labeler.settings(),
                "versions": {"kdframe": __version__, "python": platform.python_version(), "rdkit": rdkit.__version__,
                             **labeler.versions()}})

    atomic_write(path, write)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


# ----------------------------------------------------------------------------- generate


def cmd_generate(args: argparse.Namespace) -> int:
    import sys

    from ase.data import atomic_numbers

    from ..generate import GenerateSettings, generate, report_path

    pairs = parse_smiles(args.smiles, args.smiles_file)
    symbols = [s.strip() for s in args.elements.split(",") if s.strip()]
    unknown = [s for s in symbols if s not in atomic_numbers]
    if unknown or not symbols:
        raise ConfigError("--elements", f"unknown element(s) {', '.join(unknown) or '(none given)'} (valid: e.g. H,C,N,O)")
    low, high = args.densities
    if not 0 < low <= high:
        raise ConfigError("--densities", f"{low} {high} (valid: 0 < LOW <= HIGH, g/cm3)")
    if not args.rattle_amplitudes or min(args.rattle_amplitudes) <= 0 or args.box_rattle < 0:
        raise ConfigError("--rattle-amplitudes", "amplitudes must be positive (and --box-rattle >= 0)")
    settings = GenerateSettings(
        conformers=args.conformers, rattle=args.rattle, rattle_amplitudes=tuple(args.rattle_amplitudes),
        torsions=args.torsions, torsion_relax=not args.no_torsion_relax, clusters=args.clusters,
        cluster_scan=args.cluster_scan, boxes=args.boxes, box_atoms=args.box_atoms, densities=(low, high),
        box_rattle=args.box_rattle, elements=tuple(sorted(atomic_numbers[s] for s in symbols)), seed=args.seed,
        chunk_molecules=args.chunk_molecules)
    log = (lambda text: None) if args.no_progress else None
    summary = generate(args.output, pairs, settings, force=args.force, keep_parts=args.keep_parts,
                       workers=args.workers, log=log)
    for name, reason in summary.skipped:
        if args.no_progress:  # otherwise already reported as it happened
            print(f"skipped {name}: {reason}", file=sys.stderr)
    print(f"{summary.output}: {summary.configurations} configurations in {summary.seconds:.1f} s "
          f"({summary.configurations / max(summary.seconds, 1e-9):.0f}/s; {summary.chunks_done} chunks made, "
          f"{summary.chunks_skipped} resumed); {len(summary.skipped)} skipped"
          + (f" (see {report_path(summary.output)})" if summary.skipped else ""))
    return 0


# ----------------------------------------------------------------------------- label, merge


def cmd_label(args: argparse.Namespace) -> int:
    from ..labelling import label_file

    molecules = [m for m in (args.molecules or "").split(",") if m] or None
    summary = label_file(args.file, args.method, workers=args.workers, molecules=molecules,
                         per_molecule=args.per_molecule, limit=args.limit, order=args.order,
                         merge_every=args.merge_every, retry_failed=args.retry_failed,
                         progress=not args.no_progress, origin=args.origin, hessian=args.hessian,
                         journals=args.journals)
    print(f"{args.file} {args.method}{' hessian' if args.hessian else ''}: {summary.selected} selected, {summary.skipped} already done, "
          f"{summary.done} labelled, {summary.failed} failed, {summary.errors} errors"
          + (f", {summary.mean_seconds:.3f} s/conformation" if summary.seconds else ""))
    return 1 if summary.errors else 0


def cmd_merge(args: argparse.Namespace) -> int:
    from ..labelling import merge

    if not Path(args.file).is_file():
        raise DataError(f"{args.file}: data file not found")
    print(f"{args.file}: {merge(args.file, args.journals)} labels merged")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from ..data.packed import pack_ani

    source = resolve_path(args.source, Path())
    if not source.is_file():
        raise DataError(f"{args.source}: data file not found")
    path = pack_ani(source, args.target, args.units, overwrite=args.force)
    with h5py.File(path, "r") as f:
        print(f"{path}: {len(f['molecule'])} conformations, {len(f['species'])} atoms, "
              f"labels {', '.join(sorted(f['labels']))} (eV, eV/Å)")
    return 0


# ----------------------------------------------------------------------------- info


def describe(path: str | os.PathLike, per_molecule: bool = False, journals: str | os.PathLike | None = None) -> str:
    """Human-readable summary: molecules, conformations, labels present and energy ranges; the labelling
    journals in ``journals`` (see :func:`kdframe.labelling.journal_dir`)."""
    from ..labelling import journal_dir, read_journal

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    if is_packed(path):
        return describe_packed(path)
    lines: list[str] = []
    stats: dict[str, dict] = {}
    n_mol = n_conf = 0
    rows = []
    with open_hdf5(path, "ANI-layout or packed") as f:
        for name, g in molecule_groups(f):
            nc, na = g["coordinates"].shape[0], int((molecule_species(g) != 0).sum())
            n_mol += 1
            n_conf += nc
            row = [name, str(g.attrs.get("smiles", "")), na, nc]
            for key in sorted(k for k in g if "." in k):
                method, quantity = key.rsplit(".", 1)
                data = real_numbers(f"{path}:/{name}/{key}", key, g[key][()])
                ok = np.isfinite(data.reshape(len(data), -1)).all(axis=1)
                s = stats.setdefault(key, {"n": 0, "mols": 0, "min": np.inf, "max": -np.inf, "spread": 0.0, "failed": 0})
                s["n"] += int(ok.sum())
                s["mols"] += int(ok.any())
                s["failed"] += len(json.loads(g.attrs.get(f"{method}.failures", "{}"))) if quantity == "energy" else 0
                if ok.any() and data.ndim == 1:
                    s.setdefault("ratios", []).append(energy_ratios(data, molecule_species(g)[molecule_species(g) != 0]))
                    s["min"], s["max"] = min(s["min"], data[ok].min()), max(s["max"], data[ok].max())
                    s["spread"] = max(s["spread"], float(np.ptp(data[ok])))
                if quantity == "energy":
                    row.append(f"{method}:{int(ok.sum())}")
            rows.append(row)
    lines.append(f"{path}: {n_mol} molecules, {n_conf} conformations")
    if per_molecule:
        for row in rows:
            lines.append(f"  {row[0]:<22} {row[1]:<18} atoms {row[2]:>3}  conformations {row[3]:>4}  " + " ".join(row[4:]))
    lines.append(f"  {'label':<28} {'conformations':>13} {'molecules':>9} {'failed':>6}  range")
    for key, s in stats.items():
        rng = ""
        if np.isfinite(s["min"]):
            unit = "Ha" if key.endswith("energy") else ("Ha/Å" if key.endswith("forces") else "")
            rng = f"[{s['min']:.6f}, {s['max']:.6f}] {unit}"
            if key.endswith(".energy"):
                rng += f"; largest spread in a molecule {s['spread'] * KCAL_MOL_PER_HARTREE:.1f} kcal/mol"
                try:
                    check_hartree("", np.concatenate(s["ratios"]))
                except DataError as exc:
                    rng += f"; {str(exc).removeprefix(': ')}"
        lines.append(f"  {key:<28} {s['n']:>8}/{n_conf:<4} {s['mols']:>9} {s['failed']:>6}  {rng}")
    jdir = journal_dir(path, journals)
    if jdir.is_dir():
        for jp in sorted(jdir.glob("*.jsonl")):
            runs, items = read_journal(jp)
            ok = sum(r["ok"] for r in items.values())
            secs = [r["seconds"] for r in items.values()]
            lines.append(f"  journal {jp.name}: {ok} done, {len(items) - ok} failed"
                         + (f", {np.mean(secs):.3f} s/conformation" if secs else ""))
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    print(describe(resolve_path(args.file, Path()), args.per_molecule, args.journals))
    return 0
