"""``python -m kdframe_torchani fetch ani1ccx`` -- the same as ``kdframe models fetch ani1ccx``."""

from __future__ import annotations

import argparse
import sys

from kdframe.errors import KdframeError

from .cli import add_models_command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdframe_torchani")
    add_models_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["models", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except KdframeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
