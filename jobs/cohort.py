"""Stage ``cohort``: who is profiled, once: ``RUN/cohort/users.parquet`` and the items it needs.

One row per profiled user with their history (most recent first), CF items, every item they interacted
with, and their validation and test candidates (item ids, positive first); ``cold_start.parquet`` holds a
sample of the users with fewer than ``coldstart.min_history`` interactions and those items (they are
profiled from them plus the catalogue's curated default, and have nothing held out); ``items.parquet``
holds the catalogue rows the captions stage captions (the cohort's items; its evidence only with
``caption_scope: history``; all with ``caption_scope: all``).
The selection is one vectorised pass over the encoded interactions, run as a Ray task so the driver never
holds the interactions; every later stage reads these files.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult
from models.config import TailorMindConfig
from models.data import encode_interactions, load_dataset
from models.profiling.cohort import cohort_table, item_id_lists, select_cohort, select_cold_start
from runtime.artifacts import COHORT_COLD_START, COHORT_ITEMS, COHORT_USERS
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun


def build_cohort(data_dir: str, topk_dir: str | None, config: TailorMindConfig, out: str) -> dict[str, Any]:
    """Select the cohort and write its users and items; returns the counts."""
    dataset = load_dataset(data_dir)
    encoded = encode_interactions(dataset)
    settings = config.profiling
    cohort = select_cohort(
        encoded,
        settings.max_users,
        settings.history_items,
        config.seed,
        settings.num_negatives,
        settings.valid_positives,
        "popularity_matched" in settings.candidate_sets,
    )
    topk = pq.ParquetDataset(topk_dir).read(columns=["user_id", "item_ids"]) if topk_dir else None
    users = cohort_table(encoded, cohort, topk, settings.cf_items)
    pq.write_table(users, Path(out) / COHORT_USERS)
    cold_start = config.coldstart
    cold, few_items = select_cold_start(
        encoded, cohort.users, cold_start.min_history, cold_start.max_users, config.seed
    )
    cold_users = pa.table(
        {
            "user_id": encoded.user_ids.take(pa.array(cold, pa.int64())),
            "history": item_id_lists(encoded, few_items),
        }
    )
    pq.write_table(cold_users, Path(out) / COHORT_COLD_START)
    items = dataset.items
    if settings.caption_scope in ("evidence", "history"):
        columns = [users[name] for name in ("history", "cf_items")] + [cold_users["history"]]
        if settings.caption_scope == "evidence":
            columns += [
                users[name] for name in ("valid_candidates", "test_candidates", "test_candidates_popular")
            ]
        wanted = pc.unique(pa.concat_arrays([column.combine_chunks().flatten() for column in columns]))
        items = items.filter(pc.is_in(items["item_id"], value_set=wanted))
    pq.write_table(items, Path(out) / COHORT_ITEMS)
    return {
        "users": users.num_rows,
        "cold_start_users": cold_users.num_rows,
        "items": items.num_rows,
        "caption_scope": settings.caption_scope,
    }


def cohort_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``cohort``: RUN/cohort/{users,items}.parquet."""
    import ray

    config = pipeline.config
    data_dir = pipeline.results["data"].path
    topk = pipeline.results.get("topk")

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray, pipeline.runner.run_dir)
        task = ray.remote(build_cohort).options(num_cpus=1)
        return ray.get(
            task.remote(str(data_dir), str(topk.path) if topk else None, config, str(out.resolve()))
        )

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
