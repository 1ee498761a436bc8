"""The cohort built part by part of the data stage's interactions, each part holding every row of its users.

``build_cohort`` calls ``run`` (in turn here; as Ray tasks in the stage) twice per part: first for the part's
lowest sample draws (``UserSample``: a draw fixed by the user id, so the sample is the same however the data
is parted) and its train counts per item, then for the part's cohort rows, written as that part of each
file; the catalogue rows the captions need are written last. The caller holds at most ``max_users`` draws
and an item-sized count. A user's swapped-profile partner is the next profiled user of their part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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


@dataclass(frozen=True)
class CohortFiles:
    """The names of the cohort's files: profiled users, cold-start users (folders of parts) and items."""

    users: str
    cold_start: str
    items: str


Mapper = Callable[[Callable[..., Any], list[tuple[Any, ...]]], list[Any]]


def local_map(function: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[Any]:
    """Each call in turn, in this process."""
    return [function(*args) for args in calls]


def build_cohort(
    data_dir: str,
    topk_dir: str | None,
    config: TailorMindConfig,
    out: str,
    files: CohortFiles,
    run: Mapper = local_map,
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
        (data_dir, part, index, topk_dir, config, profiled, cold, popularity, out, files)
        for index, part in enumerate(parts)
    ]
    built = run(_build_part, calls)
    wanted = np.flatnonzero(np.unpackbits(np.bitwise_or.reduce([part["items"] for part in built])))
    items = run(_write_items, [(data_dir, wanted, config, out, files.items)])[0]
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
    files: CohortFiles,
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
    for table, file in ((users, files.users), (cold_users, files.cold_start)):
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


def _write_items(data_dir: str, wanted: np.ndarray, config: TailorMindConfig, out: str, name: str) -> int:
    """The catalogue rows the captions stage captions: the ``wanted`` ones (indices in the catalogue's
    order), or all of them unless the scope is the cohort's evidence or history."""
    items = load_items(data_dir)
    if config.profiling.caption_scope in ("evidence", "history"):
        items = items.take(pa.array(wanted, pa.int64()))
    pq.write_table(items, Path(out) / name)
    return items.num_rows
