"""``tailormind synth``: a synthetic dataset with planted topics, for scale and recovery tests."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jobs.cli import main
from models.config import TailorMindConfig
from models.data.synth import SynthSpec, write_synthetic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sizes, seed and output directory."""
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--tags", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interactions", type=int, help="target count (default 20 per user)")
    parser.add_argument("--topics", type=int, help="planted topics (default one per 2,000 items, 4..50)")
    parser.add_argument("--image-share", type=float, default=0.05, help="share of items with a PNG")
    parser.add_argument("--out", required=True, type=Path)


def run(args: argparse.Namespace, config: TailorMindConfig) -> int:
    """Generate and print the counts and the time it took."""
    spec = SynthSpec(
        users=args.users,
        items=args.items,
        tags=args.tags,
        seed=args.seed,
        interactions=args.interactions,
        topics=args.topics,
        image_share=args.image_share,
    )
    start = time.perf_counter()
    counts = write_synthetic(spec, args.out)
    print(
        f"wrote {args.out}: {counts['users']} users, {counts['items']} items, "
        f"{counts['interactions']} interactions in {time.perf_counter() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(["synth", *sys.argv[1:]]))
