"""``kdframe models fetch NAME``: convert a pretrained ANI ensemble into the local cache."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_models_command(subparsers: argparse._SubParsersAction) -> None:
    """Add ``models`` (with sub-command ``fetch``) to the kdframe CLI."""
    from .pretrained import PRETRAINED

    models = subparsers.add_parser("models", help="pretrained models (TorchANI ANI-1x / ANI-1ccx / ANI-2x)")
    actions = models.add_subparsers(dest="models_command", metavar="{fetch}", required=True)
    fetch = actions.add_parser("fetch", help="download (once) and convert a pretrained 8-member ensemble (ani1x, ani1ccx: the torchani 2.0 wheel from PyPI; ani2x: the ani-model-zoo ani-2x archive from GitHub)")
    fetch.add_argument("name", choices=sorted(PRETRAINED))
    fetch.add_argument("--cache", type=Path, default=None,
                       help="cache root (default: $KDFRAME_CACHE or ~/.cache/kdframe)")
    fetch.add_argument("--wheel", type=Path, default=None,
                       help="use this local copy instead of downloading: the torchani 2.0 wheel (ani1x, ani1ccx) or the ani-model-zoo ani-2x zip or folder (ani2x)")
    fetch.add_argument("--force", action="store_true", help="convert again even if already cached")
    fetch.set_defaults(func=run_fetch)


def run_fetch(args: argparse.Namespace) -> int:
    import json

    from .pretrained import MANIFEST, fetch, model_dir

    cached = (model_dir(args.name, args.cache) / MANIFEST).is_file() and not args.force
    directory = fetch(args.name, root=args.cache, wheel=args.wheel, force=args.force)
    count = json.loads((directory / MANIFEST).read_text())["members"]
    print(f"{args.name}: {count} members {'already ' if cached else ''}in {directory}")
    return 0
