"""The refiner over broadcast tables: the refine stage's batch steps (``models.profiling.rounds``) with the
item cards, priors and feedback that a worker looks up once (``runtime.broadcast``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from models.config import TailorMindConfig
from models.profiling.refiner import ProfileRefiner
from models.profiling.rounds import advance_states, start_states
from runtime.artifacts import hash_partitions, parquet_rows
from runtime.broadcast import mapping_of


def refiner_of(cards: Any, priors: Any, config: TailorMindConfig) -> ProfileRefiner:
    """The configured refiner over broadcast item cards and (likelihood ranking) item priors."""
    lookup = mapping_of(cards, "item_id", "card")
    catalogue = list(lookup) if config.profiling.valid_negatives == "resample" else []
    prior = mapping_of(priors, "item_id", "prior") if priors is not None else {}
    return ProfileRefiner(config.profiling, lookup, config.seed, catalogue, prior)


def start_batch(batch: pa.Table, cards: Any, config: TailorMindConfig, priors: Any = None) -> pa.Table:
    """Initial profiles (with the cohort's columns and ``with_feedback``'s column) as refinement states."""
    return start_states(batch, refiner_of(cards, priors, config))


def with_feedback(profiles: Any, evidence: Path) -> Any:
    """The profiles' Dataset with each user's ``feedback`` (null without any): a left join with the feedback
    stage's evidence on ``user_id``, so no worker holds every user's feedback; no shuffle when there is
    none."""
    import ray.data

    rows = parquet_rows(evidence) if evidence.exists() else 0
    if rows == 0:
        return profiles.map_batches(_no_feedback, batch_format="pyarrow", num_cpus=0.25)
    feedback = ray.data.read_parquet(str(evidence.resolve())).select_columns(["user_id", "feedback"])
    partitions = hash_partitions(rows + profiles.count())
    return profiles.join(feedback, "left_outer", num_partitions=partitions, on=("user_id",))


def _no_feedback(batch: pa.Table) -> pa.Table:
    return batch.append_column("feedback", pa.nulls(batch.num_rows, pa.string()))


def advance_batch(
    batch: pa.Table, step: str, cards: Any, priors: Any, config: TailorMindConfig, round_index: int
) -> pa.Table:
    """``advance_states`` of a batch: the previous step's answers applied, ``step``'s requests asked."""
    return advance_states(batch, step, refiner_of(cards, priors, config), round_index)
