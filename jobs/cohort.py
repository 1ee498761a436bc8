"""Stage ``cohort``: who is profiled, once: ``RUN/cohort/users.parquet`` and the items it needs.

One row per profiled user with their history (most recent first), CF items, every item they interacted
with, and their validation and test candidates (item ids, positive first); ``cold_start.parquet`` holds a
sample of the users with fewer than ``coldstart.min_history`` interactions and those items (they are
profiled from them plus the catalogue's curated default, and have nothing held out); ``items.parquet``
holds the catalogue rows the captions stage captions (the cohort's items; its evidence only with
``caption_scope: history``; all with ``caption_scope: all``).
The data stage writes the interactions in parts that each hold every row of their users; the cohort is
built part by part in Ray tasks (a part's lowest sample draws and item popularity, then its rows, written as
that part of each file), so no task holds more than a part and the driver holds the sample's draws and the
item counts. A user's swapped-profile partner is the next profiled user of their part.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult
from models.config import TailorMindConfig
from models.data import encode_interactions, load_dataset
from models.data.loader import interaction_parts, load_items
from models.data.sampler import train_popularity
from models.profiling.cohort import (
    UserSample,
    cohort_table,
    few_interaction_users,
    item_id_lists,
    profilable_users,
    select_cohort,
    select_cold_start,
)
from runtime.artifacts import COHORT_COLD_START, COHORT_ITEMS, COHORT_USERS
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun


Mapper = Callable[[Callable[..., Any], list[tuple[Any, ...]]], list[Any]]


def local_map(function: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[Any]:
    """Each call in turn, in this process."""
    return [function(*args) for args in calls]


def ray_map(function: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[Any]:
    """Each call as a Ray task of one CPU; an array given to every call is put in the object store once."""
    import ray

    task = ray.remote(function).options(num_cpus=1)
    shared = {id(arg): ray.put(arg) for args in calls for arg in args if isinstance(arg, np.ndarray)}
    return ray.get([task.remote(*(shared.get(id(arg), arg) for arg in args)) for args in calls])


def build_cohort(
    data_dir: str, topk_dir: str | None, config: TailorMindConfig, out: str, run: Mapper = local_map
) -> dict[str, Any]:
    """Select the cohort and write its users and items, one call of ``run`` per part of the interactions
    (each holds every row of its users): first each part's lowest draws and item popularity, then each
    part's cohort rows. Returns the counts."""
    parts = interaction_parts(data_dir)
    profiled, cold = _samples(config)
    summaries = run(_summarise_part, [(data_dir, part, config) for part in parts])
    profiled = profiled.limited([summary["profiled"] for summary in summaries])
    cold = cold.limited([summary["cold"] for summary in summaries])
    popularity = np.zeros_like(summaries[0]["popularity"], dtype=np.int64)
    for summary in summaries:
        popularity += summary["popularity"]
    calls = [
        (data_dir, part, index, topk_dir, config, profiled, cold, popularity, out)
        for index, part in enumerate(parts)
    ]
    built = run(_build_part, calls)
    wanted = np.flatnonzero(np.unpackbits(np.bitwise_or.reduce([part["items"] for part in built])))
    items = run(_write_items, [(data_dir, wanted, config, out)])[0]
    return {
        "users": sum(part["users"] for part in built),
        "cold_start_users": sum(part["cold_start_users"] for part in built),
        "items": items,
        "caption_scope": config.profiling.caption_scope,
        "parts": len(parts),
    }


def _samples(config: TailorMindConfig) -> tuple[UserSample, UserSample]:
    """The seeded samples of profiled and of cold-start users."""
    return (
        UserSample(config.profiling.max_users, config.seed, "profiling"),
        UserSample(config.coldstart.max_users, config.seed, "cold-start"),
    )


def _summarise_part(data_dir: str, part: str, config: TailorMindConfig) -> dict[str, np.ndarray]:
    """A part's lowest draws of profilable and of cold-start users, and its train interactions per item."""
    encoded = encode_interactions(load_dataset(data_dir, part=part))
    profiled, cold = _samples(config)
    few = few_interaction_users(encoded, config.coldstart.min_history)
    return {
        "profiled": profiled.lowest(encoded.user_ids, profilable_users(encoded)),
        "cold": cold.lowest(encoded.user_ids, few),
        "popularity": train_popularity(encoded).astype(np.int32),
    }


def _build_part(
    data_dir: str,
    part: str,
    index: int,
    topk_dir: str | None,
    config: TailorMindConfig,
    profiled: UserSample,
    cold: UserSample,
    popularity: np.ndarray,
    out: str,
) -> dict[str, Any]:
    """A part's cohort users and cold-start users, written as part ``index`` of each file; the counts and
    which items the captions stage needs (bits in the catalogue's order)."""
    encoded = encode_interactions(load_dataset(data_dir, part=part))
    settings = config.profiling
    cohort = select_cohort(
        encoded,
        profiled,
        settings.history_items,
        settings.num_negatives,
        settings.valid_positives,
        "popularity_matched" in settings.candidate_sets,
        popularity,
    )
    user_ids = encoded.user_ids.take(pa.array(cohort.users, pa.int64()))
    topk = None
    if topk_dir:
        columns = ["user_id", "item_ids"]
        topk = pq.read_table(topk_dir, columns=columns, filters=pc.field("user_id").isin(user_ids))
    users = cohort_table(encoded, cohort, topk, settings.cf_items)
    few, few_items = select_cold_start(encoded, cohort.users, config.coldstart.min_history, cold)
    cold_users = pa.table(
        {
            "user_id": encoded.user_ids.take(pa.array(few, pa.int64())),
            "history": item_id_lists(encoded, few_items),
        }
    )
    name = f"part-{index:05d}.parquet"
    for table, file in ((users, COHORT_USERS), (cold_users, COHORT_COLD_START)):
        (Path(out) / file).mkdir(exist_ok=True)
        pq.write_table(table, Path(out) / file / name)
    wanted = [*cohort.history, *few_items]
    if settings.caption_scope == "evidence":
        wanted += [*cohort.valid_candidates, cohort.test_candidates.ravel()]
        if cohort.test_candidates_popular is not None:
            wanted.append(cohort.test_candidates_popular.ravel())
    # CF items are named by id: their indices in the catalogue's order
    cf = pc.index_in(users["cf_items"].combine_chunks().flatten(), value_set=encoded.item_ids)
    wanted.append(cf.to_numpy(zero_copy_only=False).astype(np.int64))
    items = np.zeros(encoded.num_items, bool)
    items[np.concatenate(wanted)] = True
    return {"users": users.num_rows, "cold_start_users": cold_users.num_rows, "items": np.packbits(items)}


def _write_items(data_dir: str, wanted: np.ndarray, config: TailorMindConfig, out: str) -> int:
    """The catalogue rows the captions stage captions: the ``wanted`` ones (indices in the catalogue's
    order), or all of them unless the scope is the cohort's evidence or history."""
    items = load_items(data_dir)
    if config.profiling.caption_scope in ("evidence", "history"):
        items = items.take(pa.array(wanted, pa.int64()))
    pq.write_table(items, Path(out) / COHORT_ITEMS)
    return items.num_rows


def cohort_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``cohort``: RUN/cohort/{users,items}.parquet."""
    config = pipeline.config
    data_dir = pipeline.results["data"].path
    topk = pipeline.results.get("topk")

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray, pipeline.runner.run_dir)
        return build_cohort(
            str(data_dir), str(topk.path) if topk else None, config, str(out.resolve()), ray_map
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
