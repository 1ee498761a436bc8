"""Stage ``report``: the run's results on one self-contained page, RUN/report/report.html and RUN/report.html.

It reads the outputs of ``cf``, ``eval``, ``judge`` and ``generate`` that exist; a missing one shows as
"not run". No Ray: rendering is plain Python in the pipeline's process.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult
from models.report import read_run, render_report

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

SOURCES = ("cf", "feedback", "captions", "catalogue", "profiles", "refine", "eval", "judge", "generate")
PAGE = "report.html"


def report_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``report``: RUN/report/report.html, published again as RUN/report.html."""
    runner = pipeline.runner

    def build(out: Path) -> dict[str, Any]:
        results = read_run(runner.run_dir)
        (out / PAGE).write_text(render_report(results), encoding="utf-8")
        return {"sections_run": [name for name in SOURCES if runner.path(name).is_dir()]}

    inputs = [runner.path(name) for name in SOURCES if name in pipeline.results or runner.path(name).is_dir()]
    result = runner.run("report", build, config={}, inputs=inputs)
    copy_atomically(result.path / PAGE, runner.run_dir / PAGE)
    return result


def copy_atomically(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` through a temporary file and a rename: readers never see half a file."""
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


if __name__ == "__main__":
    raise SystemExit(stage_main("report", sys.argv[1:]))
