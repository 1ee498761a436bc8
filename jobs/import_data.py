"""``tailormind import movielens --src DIR --out DATASET``: public datasets into the TailorBench format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.cli import main
from models.config import TailorMindConfig
from models.data import write_dataset
from models.data.movielens import import_movielens

IMPORTERS = {"movielens": import_movielens}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Which dataset, where it is, where the TailorBench copy goes."""
    parser.add_argument("source", choices=sorted(IMPORTERS), help="dataset family")
    parser.add_argument("--src", required=True, type=Path, help="folder of the downloaded dataset")
    parser.add_argument("--out", required=True, type=Path, help="TailorBench dataset directory to write")


def run(args: argparse.Namespace, config: TailorMindConfig) -> int:
    """Convert and write; print the counts."""
    dataset = IMPORTERS[args.source](args.src)
    write_dataset(dataset, args.out)
    users = len(set(dataset.interactions["user_id"].to_pylist()))
    print(
        f"wrote {args.out}: {users} users, {dataset.items.num_rows} items, "
        f"{dataset.interactions.num_rows} interactions"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(["import", *sys.argv[1:]]))
