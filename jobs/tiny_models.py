"""``tailormind models build-tiny``: build the tiny offline models that tests and the demo use."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jobs.cli import main
from models.config import TailorMindConfig
from models.tiny import build_tiny_models, default_models_dir
from models.tiny.builders import TINY_MODELS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``build-tiny`` with an output directory, a model subset and ``--force``."""
    parser.add_argument("action", choices=["build-tiny"], help="what to do with the model store")
    parser.add_argument("--out", type=Path, help=f"where to build (default {default_models_dir()})")
    parser.add_argument("--only", nargs="+", choices=sorted(TINY_MODELS), help="build only these models")
    parser.add_argument("--force", action="store_true", help="rebuild even when a current build exists")


def run(args: argparse.Namespace, config: TailorMindConfig) -> int:
    """Build what is missing or stale and print where each model is."""
    start = time.perf_counter()
    results = build_tiny_models(args.out, args.only, force=args.force)
    for name, (path, built) in results.items():
        print(f"{name:5s} {'built ' if built else 'exists'} {path}")
    print(f"tiny models ready in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(["models", *sys.argv[1:]]))
