"""The ``kdframe`` command line. Plugins add commands through the ``register_commands`` hook."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__
from .errors import KdframeError


def _run_stage(until: str):
    def command(args: argparse.Namespace) -> int:
        from . import distributed
        from .errors import ConfigError, DataError
        from .workflows.base import Run, load_config

        distributed.init()  # under torchrun: every rank runs the workflow, rank 0 writes and prints
        run = None
        try:
            workflow, config = load_config(Path(args.config))
            try:
                run = Run(config, Path(args.config), workflow, progress=not args.quiet and distributed.is_main())
            except (ConfigError, DataError) as exc:  # checks of the config against its data: name the file too
                if not str(exc).startswith(f"{args.config}: "):
                    exc.args = (f"{args.config}: {exc}",)
                raise
            text = workflow.run(run, until=until)
            if distributed.is_main():
                print(text)
        finally:
            if run is not None:
                run.close()  # the run_dir's lock
            distributed.finish()
        return 0

    return command


def _plugins(args: argparse.Namespace) -> int:
    from .plugins import describe

    print(f"kdframe {__version__}")
    print(describe())
    return 0


def _evaluation_model(args: argparse.Namespace):
    """(model, members, name in the table, default report path) from ``--model`` (once or more) or ``--pretrained``."""
    from .errors import ConfigError
    from .potential import Ensemble, Potential

    if args.model and args.pretrained:
        raise ConfigError("evaluate", "give --model or --pretrained, not both")
    if not args.model and not args.pretrained:
        raise ConfigError("evaluate", "give --model FILE (once, or several times for an ensemble) or --pretrained NAME")
    data_stem = Path(args.data.removeprefix("bundled:")).stem
    if args.pretrained:
        from .plugins import registry

        loaders = registry().pretrained
        if args.pretrained not in loaders:
            raise ConfigError("--pretrained", f"unknown pretrained model {args.pretrained!r}", loaders)
        model = loaders[args.pretrained]()
        members = list(model.members)
        name = f"{args.pretrained} ({len(members)} members)"
        return model, members, name, Path(f"evaluation-{args.pretrained}-{data_stem}.md")
    members = [Potential.load(path) for path in args.model]
    if len(members) == 1:
        first = Path(args.model[0])
        return members[0], members, first.name, first.with_name(f"evaluation-{data_stem}.md")
    heads = {tuple(m.heads) for m in members}
    if len(heads) > 1:
        raise ConfigError("--model", "the ensemble's models have different output heads", [",".join(h) for h in heads])
    names = ", ".join(Path(p).name for p in args.model)
    return (Ensemble(members), members, f"ensemble of {len(members)} ({names})",
            Path(args.model[0]).with_name(f"evaluation-ensemble-{data_stem}.md"))


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from .config import BUNDLED_DIR, BUNDLED_PREFIX, resolve_path
    from .data.readers import read_dataset
    from .errors import ConfigError
    from .evaluation import evaluate, evaluate_ensemble, summary_markdown
    from .io import atomic_write_text
    from .report import table

    data_path = resolve_path(args.data, Path.cwd())
    if args.data.startswith(BUNDLED_PREFIX) and not data_path.is_file():
        raise ConfigError("--data", f"no bundled dataset {args.data!r}",
                          [f"{BUNDLED_PREFIX}{p.name}" for p in sorted(BUNDLED_DIR.glob("*.h5"))])
    if args.out is not None and Path(args.out).is_dir():
        raise ConfigError("--out", f"{args.out} is a directory; give the markdown file to write")
    if args.out is not None and Path(args.out).exists() and any(
            Path(args.out).samefile(p) for p in [*args.model, data_path] if Path(p).exists()):
        raise ConfigError("--out", f"{args.out} is an input of this evaluation (a --model or the --data file); "
                          "give another markdown file to write")
    model, members, name, default_out = _evaluation_model(args)
    optional = {"forces": args.forces_key, "stress": args.stress_key, "hessian": args.hessian_key}
    keys = {"energy": args.energy_key, **{label: key for label, key in optional.items() if key}}
    data = read_dataset(data_path, keys)
    model.check_species(torch.from_numpy(data.elements()), str(data_path))
    head = model.head_index(args.head, "--head") if args.head else 0
    forces, stress = "forces" if args.forces_key else None, "stress" if args.stress_key else None
    hessian = "hessian" if args.hessian_key else None
    if len(members) > 1:
        metrics = evaluate_ensemble(members, data, "energy", forces, head=head, stress_label=stress, refit=True,
                                    hessian_label=hessian)
    else:
        metrics = evaluate(model, data, "energy", forces, head=head, stress_label=stress, refit=True,
                           hessian_label=hessian)
    set_name = args.data if args.data.startswith(BUNDLED_PREFIX) else data_path.name
    text = table({set_name: {name: metrics}})
    extra = summary_markdown(name, metrics)
    out = Path(args.out) if args.out else default_out
    values = "\n".join(f"- {k}: {v:.6g}" for k, v in metrics.values.items())
    atomic_write_text(out, text + "\n\n" + extra + "\n" + values + "\n")
    print(text)
    print("\n" + extra.rstrip())
    print(f"\nWritten: {out}")
    return 0


def _config(args: argparse.Namespace) -> int:
    """Print a run file with its ``extends:`` chain merged in: the keys a run of it reads (defaults left out)."""
    import yaml

    from .config import load_yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: object) -> bool:  # a table shared by several keys is written out at each
            return True

    print(yaml.dump(load_yaml(args.config), Dumper=Dumper, sort_keys=False, default_flow_style=None,
                    allow_unicode=True, width=120), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .plugins import add_commands

    parser = argparse.ArgumentParser(prog="kdframe", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kdframe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, until, text in (("run", "run", "run a whole workflow from a YAML file"),
                              ("train", "train", "train the teachers (or the single model) of a YAML run"),
                              ("label", "label", "train the teachers and compute their cached knowledge")):
        p = sub.add_parser(name, help=text)
        p.add_argument("config", help="YAML run configuration")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.set_defaults(func=_run_stage(until))
    p = sub.add_parser("config", help="print a YAML run file with the files it extends merged in")
    p.add_argument("config", help="YAML run configuration")
    p.set_defaults(func=_config)
    p = sub.add_parser("plugins", help="list installed plugins and what they register")
    p.set_defaults(func=_plugins)
    p = sub.add_parser("evaluate", help="evaluate a saved model, an ensemble or a pretrained ensemble on an "
                                        "ANI-layout HDF5, packed or extxyz file")
    p.add_argument("--model", action="append", default=[],
                   help="a saved model file; give it several times for an ensemble (members averaged)")
    p.add_argument("--pretrained", default=None, help="a registered pretrained ensemble (see `kdframe plugins`)")
    p.add_argument("--data", required=True, help="data file, or bundled:NAME for a dataset shipped with kdframe")
    p.add_argument("--energy-key", default="energy", help="energy key in the file (default: energy)")
    p.add_argument("--forces-key", default=None, help="forces key in the file (default: no force metrics)")
    p.add_argument("--stress-key", default=None, help="stress key of an extxyz file, eV/Å³ (default: no stress metrics)")
    p.add_argument("--hessian-key", default=None,
                   help="Hessian key of an ANI file, e.g. xtb.hessian: Hessian-element errors and harmonic frequency "
                        "errors (freq, cm-1) at the reference geometries (default: none; small molecules only)")
    p.add_argument("--head", default=None, help="output head (fidelity) to evaluate (default: the first)")
    p.add_argument("--out", default=None, help="markdown file for the metrics (default: beside the (first) model; "
                                                "for --pretrained in the current directory)")
    p.set_defaults(func=_evaluate)
    add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # stdout closed early (e.g. `kdframe data info FILE | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python docs' recipe: no error at exit
        return 1
    except KdframeError as exc:
        print(f"kdframe: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a permission, read-only or full-disk failure outside kdframe's own writes
        from .io import ENVIRONMENT_ERRNOS, FULL_DISK

        if exc.errno not in ENVIRONMENT_ERRNOS:  # a bug, not the environment: keep the traceback
            raise
        import re

        named = re.search(r"name = '([^']*)'", str(exc))  # h5py gives the errno, the file only in its message
        filename = exc.filename or (named.group(1) if named else None)
        where = f"{filename}: " if filename else ""
        todo = ("free some space, then run the same command again" if exc.errno in FULL_DISK
                else "check the permissions of that file and its folder")
        print(f"kdframe: error: {where}{ENVIRONMENT_ERRNOS[exc.errno]}; {todo}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kdframe: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
