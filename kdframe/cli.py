"""The ``kdframe`` command line. Plugins add commands through the ``register_commands`` hook."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .errors import KdframeError


def _run_stage(until: str):
    def command(args: argparse.Namespace) -> int:
        from . import distributed
        from .workflows.base import Run, load_config

        distributed.init()  # under torchrun: every rank runs the workflow, rank 0 writes and prints
        try:
            workflow, config = load_config(Path(args.config))
            run = Run(config, Path(args.config), workflow, progress=not args.quiet and distributed.is_main())
            text = workflow.run(run, until=until)
            if distributed.is_main():
                print(text)
        finally:
            distributed.finish()
        return 0

    return command


def _plugins(args: argparse.Namespace) -> int:
    from .plugins import BROKEN, installed_plugins, registry

    reg = registry()
    print(f"kdframe {__version__}")
    for name, dist, version in installed_plugins():
        print(f"  {name:32s} {dist} {version}")
    for name, reason in sorted(BROKEN.items()):
        print(f"  {name:32s} FAILED TO LOAD: {reason}")
    for kind in ("architectures", "knowledge_sources", "schedules", "labelers", "workflows", "pretrained"):
        print(f"{kind}: {', '.join(sorted(getattr(reg, kind))) or '(none)'}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .data.readers import read_dataset
    from .evaluation import evaluate
    from .io import atomic_write_text
    from .potential import Potential
    from .report import table

    model = Potential.load(args.model)
    optional = {"forces": args.forces_key, "stress": args.stress_key}
    keys = {"energy": args.energy_key, **{label: key for label, key in optional.items() if key}}
    data = read_dataset(args.data, keys)
    model.check_species(__import__("torch").from_numpy(data.elements()), str(args.data))
    metrics = evaluate(model, data, "energy", "forces" if args.forces_key else None,
                       head=model.head_index(args.head, "--head") if args.head else 0,
                       stress_label="stress" if args.stress_key else None)
    text = table({Path(args.data).name: {Path(args.model).name: metrics}})
    out = Path(args.out or Path(args.model).with_name(f"evaluation-{Path(args.data).stem}.md"))
    atomic_write_text(out, text + "\n\n" + "\n".join(f"- {k}: {v:.6g}" for k, v in metrics.values.items()) + "\n")
    print(text)
    print(f"\nWritten: {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .plugins import plugin_manager

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
    p = sub.add_parser("plugins", help="list installed plugins and what they register")
    p.set_defaults(func=_plugins)
    p = sub.add_parser("evaluate", help="evaluate a saved model on an ANI-layout HDF5 or extxyz file")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--energy-key", default="energy", help="energy key in the file (default: energy)")
    p.add_argument("--forces-key", default=None, help="forces key in the file (default: no force metrics)")
    p.add_argument("--stress-key", default=None, help="stress key of an extxyz file, eV/Å³ (default: no stress metrics)")
    p.add_argument("--head", default=None, help="output head (fidelity) to evaluate (default: the first)")
    p.add_argument("--out", default=None, help="markdown file for the metrics (default: beside the model)")
    p.set_defaults(func=_evaluate)
    plugin_manager().hook.register_commands(subparsers=sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KdframeError as exc:
        print(f"kdframe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kdframe: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
