"""The demo as a newcomer runs it: `tailormind run --config configs/demo.yaml` from an empty run folder, once
with the console going to a file (what a job log sees) and once in a terminal (`script`), after the install.

Rows: per console, the pipeline's wall seconds and its newline-terminated console lines; per stage (from
the job-log run), its seconds and headline counts; the degenerate profiles and posts it wrote. The machine
(CPU kind, bf16 units) heads the section; the engines' dtype is the demo config's, resolved on this node.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RAW_DIR, BenchResult
from jobs.pipeline import STAGES
from models.config import load_config
from models.llm.engine import engine_dtype

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "demo.yaml"
WORK = RAW_DIR / "demo"  # the runs, kept to be read (ignored by git)
GOAL_SECONDS, GOAL_LINES = 360, 150
HEADLINES = ("users", "items", "posts", "degenerate", "failed", "degenerate_posts", "captioned")


def run(quick: bool = False) -> BenchResult:
    """Both consoles, each from an empty run folder under ``raw/demo/``; stages of the job-log run."""
    result = BenchResult("demo")
    shutil.rmtree(WORK, ignore_errors=True)
    stages: list[dict[str, Any]] = []
    for console in ("job log", "terminal"):
        out = WORK / console.replace(" ", "-")
        seconds, lines = _pipeline(out, terminal=console == "terminal")
        result.add(console=console, pipeline_seconds=round(seconds, 1), console_lines=lines)
        if console == "job log":
            stages = [_stage_row(out, name) for name in STAGES if (out / name / "_stage.json").is_file()]
        if quick:
            break
    for row in stages:
        result.add(**row)
    dtype = engine_dtype(load_config(str(CONFIG), []).llm.profiler)
    result.notes += [
        f"goals (issue 33): pipeline at most {GOAL_SECONDS} s, at most {GOAL_LINES} console lines in both",
        f"engines' dtype on this node: {dtype} (configs/demo.yaml, dtype auto)",
        "console lines: newline-terminated lines from `tailormind run` to the report's path; a terminal's "
        "progress bars redraw in place and count only when they end a line",
    ]
    return result


def _pipeline(out: Path, terminal: bool) -> tuple[float, int]:
    """Wall seconds and console lines of one full demo pipeline into ``out``."""
    command = [sys.executable, "-m", "jobs.cli", "run", "--config", str(CONFIG), "--out", str(out)]
    if terminal:  # a pseudo-terminal, as a person at a shell sees it
        command = ["script", "-qefc", subprocess.list2cmdline(command), "/dev/null"]
    start = time.perf_counter()
    finished = subprocess.run(command, cwd=REPO, capture_output=True, check=False)
    seconds = time.perf_counter() - start
    console = finished.stdout + finished.stderr
    (out / "console.txt").write_bytes(console)
    if finished.returncode:
        raise RuntimeError(f"the demo failed ({finished.returncode}); its console: {out / 'console.txt'}")
    return seconds, console.count(b"\n")


def _stage_row(out: Path, stage: str) -> dict[str, Any]:
    """A stage's seconds and the headline counts of its summary."""
    marker = json.loads((out / stage / "_stage.json").read_text())
    summary = marker.get("summary") or {}
    shown = [key for key in HEADLINES if isinstance(summary.get(key), int | float)]
    counts = ", ".join(f"{key} {summary[key]}" for key in shown)
    return {"stage": stage, "seconds": marker["seconds"], "counts": counts}
