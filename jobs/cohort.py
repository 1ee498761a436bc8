"""Stage ``cohort``: who is profiled, once: ``RUN/cohort/users.parquet`` and the items it needs.

One row per profiled user with their history (most recent first), CF items, every item they interacted
with, and their validation and test candidates (item ids, positive first); ``cold_start.parquet`` holds a
sample of the users with fewer than ``coldstart.min_history`` interactions and those items (they are
profiled from them plus the catalogue's curated default, and have nothing held out); ``items.parquet``
holds the catalogue rows the captions stage captions (the cohort's items; its evidence only with
``caption_scope: history``; all with ``caption_scope: all``).
The cohort is built part by part of the data stage's interactions in Ray tasks
(``models.profiling.cohort_parts``): no task holds more than a part, the driver the sample's draws and counts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult
from models.profiling.cohort_parts import build_cohort
from runtime.artifacts import COHORT_FILES
from runtime.cluster import connect
from runtime.tasks import ray_map

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun


def cohort_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``cohort``: RUN/cohort/{users,items}.parquet."""
    config = pipeline.config
    data_dir = pipeline.results["data"].path
    topk = pipeline.results.get("topk")

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray, pipeline.runner.run_dir)
        topk_dir = str(topk.path) if topk else None
        return build_cohort(str(data_dir), topk_dir, config, str(out.resolve()), COHORT_FILES, ray_map)

    chosen = {
        "max_users",
        "history_items",
        "cf_items",
        "caption_scope",
        "num_negatives",
        "valid_positives",
        "candidate_sets",
    }
    section = {
        "profiling": config.profiling.model_dump(include=chosen),
        "coldstart": config.coldstart.model_dump(include={"min_history", "max_users"}),
        "seed": config.seed,
    }
    inputs = [data_dir] + ([topk.path] if topk else [])
    return pipeline.runner.run("cohort", build, config=section, inputs=inputs)


if __name__ == "__main__":
    raise SystemExit(stage_main("cohort", sys.argv[1:]))
