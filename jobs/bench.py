"""``tailormind bench all|NAME``: run benchmarks and write JSON results and PNG plots."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import benchmarks
from benchmarks.common import RESULTS_DIR
from jobs.cli import main
from models.config import TailorMindConfig
from models.errors import TailorMindError

log = logging.getLogger("tailormind.bench")
NOT_BENCHMARKS = {"common", "report"}


def available() -> list[str]:
    """Names of the benchmark modules under ``benchmarks/``."""
    return sorted(
        info.name
        for info in pkgutil.iter_modules(benchmarks.__path__)
        if not info.name.startswith("_") and info.name not in NOT_BENCHMARKS
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Benchmark selection and size."""
    parser.add_argument(
        "name",
        help="'all', 'report' (docs/benchmarks.md from the results) or one of: " + ", ".join(available()),
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")


def run(args: argparse.Namespace, config: TailorMindConfig) -> int:
    """Run the selected benchmarks one after the other and say where the results are; ``report`` (and
    ``all``, at its end) regenerates docs/benchmarks.md from the results."""
    from benchmarks import report

    if args.name == "report":
        log.info("benchmark tables -> %s", report.write())
        return 0
    names = available() if args.name == "all" else [args.name]
    unknown = [name for name in names if name not in available()]
    if unknown:
        raise TailorMindError(
            f"unknown benchmark '{unknown[0]}'; choose 'all' or one of: {', '.join(available())}."
        )
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        result = module.run(quick=args.quick)
        log.info("benchmark %s -> %s", name, result.write())
    log.info("results and plots are in %s; tables -> %s", RESULTS_DIR, report.write())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
