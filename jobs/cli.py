"""The ``tailormind`` command line: one subcommand per job module, loaded only when it runs."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import TextIO

from models.config import TailorMindConfig, load_config
from models.errors import TailorMindError

# subcommand -> (module under jobs/ or serve/ that implements it, one-line help). A module provides
# ``add_arguments(parser)`` and ``run(args, config) -> int | None``.
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("jobs.data", "check a dataset directory and quarantine bad rows"),
    "import": ("jobs.dataset", "convert a public dataset into the TailorBench format"),
    "synth": ("jobs.synth", "write a synthetic dataset with planted topics"),
    "train-cf": ("jobs.cf", "train the hypergraph CF model with Ray Train"),
    "score-topk": ("jobs.topk", "top-K unseen items per user from the CF embeddings, on Ray Data"),
    "run": ("jobs.pipeline", "run the whole pipeline of a config into a run directory"),
    "serve": ("serve.app", "serve the LLMs, /v1/profile and /v1/generate with Ray Serve until stopped"),
    "models": ("jobs.tiny_models", "build the tiny offline models used by tests and the demo"),
    "bench": ("jobs.bench", "run the throughput benchmarks and write results and plots"),
}


def build_parser(command: str, module: ModuleType) -> argparse.ArgumentParser:
    """Parser for one subcommand: the shared ``--config``/``--set``/``--address`` plus the module's own."""
    parser = argparse.ArgumentParser(prog=f"tailormind {command}", description=COMMANDS[command][1])
    parser.add_argument("--config", metavar="FILE", help="YAML config file (defaults apply without one)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set cf.epochs=10 (repeatable)",
    )
    parser.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local cluster)")
    module.add_arguments(parser)
    return parser


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name:<{width}}  {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "usage: tailormind COMMAND [options]\n\ncommands:\n" + "\n".join(lines) + "\n"


class StderrHandler(logging.StreamHandler):
    """A stream handler on whatever ``sys.stderr`` is when a record is emitted (pytest swaps it per test)."""

    @property
    def stream(self) -> TextIO:
        """The current standard error."""
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


class OnceFilter(logging.Filter):
    """Lets each distinct warning or error through once; repeats are counted (``repeats``), not shown."""

    def __init__(self) -> None:
        super().__init__()
        self.repeats: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a warning or error already shown."""
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.getMessage())
        self.repeats[key] = self.repeats.get(key, -1) + 1
        return self.repeats[key] == 0


def console_logging() -> None:
    """Our messages on stderr, one line each, in a format Ray's own logging setup cannot replace; a
    repeated warning is shown once."""
    logger = logging.getLogger("tailormind")
    if not logger.handlers:
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(OnceFilter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # ray.llm reformats the root logger as JSON when it is imported
    # Ray Data warns whenever a step's task pool is wider than its input (small cohorts): not actionable.
    warnings.filterwarnings("ignore", message="The maximum number of concurrent tasks", category=UserWarning)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; bad input or config exits 2 with a one-paragraph message, never a traceback."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if not args_in or args_in[0] in ("-h", "--help"):
        sys.stdout.write(_usage())
        return 0 if args_in else 2
    command, rest = args_in[0], args_in[1:]
    if command not in COMMANDS:
        sys.stderr.write(f"tailormind: unknown command '{command}'.\n" + _usage())
        return 2
    console_logging()
    module = importlib.import_module(COMMANDS[command][0])
    args = build_parser(command, module).parse_args(rest)
    try:
        config: TailorMindConfig = load_config(args.config, args.overrides)
        if args.address:
            config.ray.address = args.address
        status = module.run(args, config)
    except TailorMindError as exc:
        sys.stderr.write(f"tailormind {command}: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"tailormind {command}: interrupted\n")
        return 130
    return int(status or 0)


if __name__ == "__main__":
    raise SystemExit(main())
