"""``kdframe data teacher-label``: label every configuration of a file with a teacher ensemble (resumable, sharded).

Added as a sub-command of ``kdframe data`` (registered by :mod:`kdframe.commands.data`, which the plugin order
loads first: the core's plugins are loaded by entry-point name); see :mod:`kdframe.teacher_labelling`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .. import hookimpl
from ..config import resolve_path
from ..errors import ConfigError
from .data import non_negative_int, positive_int

HELP = ("label every configuration of a packed, ANI-layout or extxyz file with a teacher ensemble into a packed "
        "file (teacher.energy, teacher.forces and the ensemble spread); resumable")


@hookimpl
def register_commands(subparsers) -> None:
    data = subparsers.choices.get("data")
    if data is None:  # kdframe.commands.data not loaded (e.g. a broken install): a top-level command instead
        add_arguments(subparsers.add_parser("teacher-label", help=HELP))
        return
    actions = [a for a in data._actions if isinstance(a, argparse._SubParsersAction)]
    add_arguments(actions[0].add_parser("teacher-label", help=HELP))


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..teacher_labelling import BATCH, CHUNK

    p.add_argument("input", help="packed (kdframe data pack), ANI-layout HDF5 or extxyz file, or bundled:NAME")
    p.add_argument("output", help="packed file to write (atomically, at the end); OUTPUT.parts/ holds the shards")
    p.add_argument("--pretrained", default=None, help="a registered pretrained ensemble (see `kdframe plugins`)")
    p.add_argument("--model", action="append", default=[],
                   help="a saved model file; give it several times for an ensemble")
    p.add_argument("--align-to", default=None, metavar="DATA",
                   help="ground-truth data whose energies per-element offsets are fitted to (with --energy-key), or "
                        "bundled:NAME for a dataset shipped with kdframe")
    p.add_argument("--energy-key", default=None, metavar="KEY", help="energy key of --align-to")
    p.add_argument("--head", default=None, help="output head of the teacher (default: the first)")
    p.add_argument("--batch-size", type=positive_int, default=BATCH, help=f"configurations per batch (default {BATCH})")
    p.add_argument("--chunk-size", type=positive_int, default=CHUNK,
                   help=f"configurations per shard, the unit of resumption (default {CHUNK})")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (one process)")
    p.add_argument("--workers", type=non_negative_int, default=0,
                   help="CPU processes with one torch thread each (0: this process, torch's own threads)")
    p.add_argument("--per-atom-spread", action="store_true",
                   help="also teacher.forces_std_atoms: the members' std of every force component (eV/Å)")
    p.add_argument("--atom-energies", action="store_true",
                   help="also teacher.atom_energies: the ensemble's per-atom energies (eV), summing to teacher.energy")
    p.add_argument("--hvp", action="store_true", help="also teacher.hvp: the teacher's Hessian times one fixed unit "
                   "probe per configuration (eV/Å²), and the probe, teacher.hvp_probe")
    p.add_argument("--hvp-probes", default="rademacher", choices=("rademacher", "gaussian", "one_hot"),
                   help="the probes' kind (default rademacher)")
    p.add_argument("--hvp-seed", type=non_negative_int, default=0,
                   help="the probes' seed (default 0; a run's sources.NAME.probes.seed)")
    p.add_argument("--no-force-spread", action="store_true",
                   help="no teacher.forces_std (one gradient instead of one per member: several times faster)")
    p.add_argument("--realign", action="append", default=[], metavar="LABELS",
                   help="a label file of the same teacher, input and outputs made with other offsets (e.g. another "
                        "--align-to): shifted to this alignment instead of labelling again; several: the first that "
                        "fits")
    p.add_argument("--force", action="store_true", help="replace an existing OUTPUT (never the input)")
    p.add_argument("--keep-parts", action="store_true", help="keep OUTPUT.parts/ (shards and journal) after merging")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_teacher_label)


def cmd_teacher_label(args: argparse.Namespace) -> int:
    from ..probes import ProbeSettings
    from ..teacher_labelling import TeacherSpec, summary_text, teacher_label

    if args.model and args.pretrained:
        raise ConfigError("teacher-label", "give --model or --pretrained, not both")
    if not args.model and not args.pretrained:
        raise ConfigError("teacher-label", "give --model FILE (once, or several times for an ensemble) or "
                                           "--pretrained NAME")
    spec = TeacherSpec(pretrained=args.pretrained, models=tuple(os.fspath(m) for m in args.model))
    if not args.hvp and (args.hvp_probes != "rademacher" or args.hvp_seed):
        raise ConfigError("--hvp-probes" if args.hvp_probes != "rademacher" else "--hvp-seed",
                          "probe settings are for --hvp: add it")
    hvp = ProbeSettings(kind=args.hvp_probes, seed=args.hvp_seed) if args.hvp else None
    align_to = resolve_path(args.align_to, Path()) if args.align_to else None
    summary = teacher_label(resolve_path(args.input, Path()), args.output, spec, align_to=align_to,
                            energy_key=args.energy_key,
                            head=args.head, chunk_size=args.chunk_size, batch_size=args.batch_size, device=args.device,
                            workers=args.workers, spread=not args.no_force_spread, per_atom=args.per_atom_spread,
                            atom_energies=args.atom_energies, hvp=hvp, force=args.force, keep_parts=args.keep_parts,
                            progress=not args.no_progress, realign_from=args.realign,
                            realign_required=bool(args.realign))
    print(summary_text(summary))
    return 0
