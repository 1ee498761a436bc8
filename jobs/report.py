"""Stage ``report``: the run's results on one self-contained page, RUN/report/report.html and RUN/report.html.

It reads the outputs of the stages that exist (a missing one shows as "not run"): their metrics and
summaries, and of the generated posts the totals over every user, folded block by block in a Ray task, and a
seeded sample of ``report.sample_posts`` users whose posts it shows in full; the others are reachable
through the generate stage's paged index. The page's size does not grow with the number of users.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult
from models.report import PostTotals, read_run, render_report
from runtime.artifacts import POSTS
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

SOURCES = ("cf", "feedback", "captions", "catalogue", "profiles", "refine", "eval", "judge", "generate")
PAGE = "report.html"


def report_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``report``: RUN/report/report.html, published again as RUN/report.html."""
    runner = pipeline.runner

    settings = pipeline.config.report

    def build(out: Path) -> dict[str, Any]:
        totals = None
        if (runner.path("generate") / POSTS).exists():
            import ray

            connect(pipeline.config.ray, runner.run_dir)
            task = ray.remote(post_totals).options(num_cpus=0.25)
            totals = ray.get(
                task.remote(str(runner.path("generate") / POSTS), settings.sample_posts, pipeline.config.seed)
            )
        data = read_run(runner.run_dir, totals)
        (out / PAGE).write_text(render_report(data), encoding="utf-8")
        return {
            "sections_run": [name for name in SOURCES if runner.path(name).is_dir()],
            "posts_shown": len(data.posts or []),
        }

    inputs = [runner.path(name) for name in SOURCES if name in pipeline.results or runner.path(name).is_dir()]
    result = runner.run(
        "report", build, config={"report": settings, "seed": pipeline.config.seed}, inputs=inputs
    )
    copy_atomically(result.path / PAGE, runner.run_dir / PAGE)
    return result


def post_totals(posts: str, sample: int, seed: int) -> PostTotals:
    """The posts' totals and seeded sample, folded over the summary rows block by block (in a task)."""
    import pyarrow.dataset

    totals = PostTotals(sample_size=sample, seed=seed)
    for batch in pyarrow.dataset.dataset(posts, format="parquet").to_batches():
        totals.add(pa.Table.from_batches([batch]))
    return totals


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
