"""Stage ``priors``: each candidate item's card scored once under the likelihood ranker's empty profile.

The likelihood ranker scores a candidate by log P(card | profile) - log P(card | empty profile); the second
term depends on the item and the ranker's model alone, so it is computed here once per item and every
user and round of ``refine`` and ``eval`` reads it. Only items that some cohort user ranks (their
validation and test candidates) are scored, or every item when validation negatives are resampled each
round: the demo's 4 users need about 400 of MovieLens' 9,742 items. ``RUN/priors/items.parquet/`` holds
``item_id`` and ``prior`` (null where scoring failed). With ``profiling.rank_mode: listwise`` the stage
writes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.llm_step import LIGHT
from jobs.pipeline import stage_main
from jobs.score_step import ScoreStep
from jobs.stage_runner import StageResult
from models.config import TailorMindConfig
from models.llm.prompts import LIKELIHOOD
from models.llm.rows import scoring_json
from models.profiling.likelihood import prior_requests
from runtime.artifacts import CAPTIONED_ITEMS, COHORT_USERS, PRIORS, hash_partitions, parquet_rows
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun


CANDIDATES = ("valid_candidates", "test_candidates", "test_candidates_popular")


def candidate_items_batch(batch: pa.Table) -> pa.Table:
    """The distinct item ids among a batch of users' candidates."""
    lists = [pc.list_flatten(batch[name]) for name in CANDIDATES if name in batch.column_names]
    return pa.table({"item_id": pc.unique(pa.concat_arrays([a.combine_chunks() for a in lists]))})


def requests_batch(batch: pa.Table, chars: int) -> pa.Table:
    """One prior request per item."""
    cards = dict(zip(batch["item_id"].to_pylist(), batch["card"].to_pylist(), strict=True))
    asked = [[scoring_json(r)] for r in prior_requests(list(cards), cards, chars)]
    return batch.select(["item_id"]).append_column("prior_requests", pa.array(asked, pa.list_(pa.string())))


def priors_batch(batch: pa.Table) -> pa.Table:
    """(item_id, prior, failed) from the step's scores."""
    scores = [values[0] if values else None for values in batch["prior_scores"].to_pylist()]
    return pa.table({"item_id": batch["item_id"], "prior": pa.array(scores, pa.float64())})


def priors_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``priors``: RUN/priors/items.parquet/ (empty unless ranking by likelihood)."""
    import ray.data

    config: TailorMindConfig = pipeline.config
    captions, cohort = pipeline.results["captions"].path, pipeline.results["cohort"].path

    def build(out: Path) -> dict[str, Any]:
        if config.profiling.rank_mode != "likelihood":
            empty = {"item_id": pa.array([], pa.string()), "prior": pa.array([], pa.float64())}
            pq.write_table(pa.table(empty), out / "empty.parquet")
            return {"items": 0, "rank_mode": config.profiling.rank_mode}
        connect(config.ray, pipeline.runner.run_dir)
        cards = str((captions / CAPTIONED_ITEMS).resolve())
        items = ray.data.read_parquet(cards, columns=["item_id", "card"])
        if config.profiling.valid_negatives == "fixed":  # resampled negatives may be any item
            partitions = hash_partitions(parquet_rows(Path(cards)))
            ranked = ranked_items(cohort, partitions)
            items = items.join(ranked, "inner", num_partitions=partitions, on=("item_id",))
        asked = items.map_batches(
            requests_batch,
            fn_kwargs={"chars": config.profiling.candidate_chars},
            batch_format="pyarrow",
            **LIGHT,
        )
        scored = ScoreStep("prior", config.llm.ranker)(asked)
        path = out / PRIORS
        scored.map_batches(priors_batch, batch_format="pyarrow", **LIGHT).write_parquet(str(path.resolve()))
        scored_items, failed = row_and_null_counts(path, "prior")
        return {"items": scored_items, "failed": failed, "template": LIKELIHOOD.key}

    section = {
        "ranker": config.llm.ranker,
        "rank_mode": config.profiling.rank_mode,
        "candidate_chars": config.profiling.candidate_chars,
        "template": LIKELIHOOD.key,
        "valid_negatives": config.profiling.valid_negatives,
    }
    return pipeline.runner.run("priors", build, config=section, inputs=[captions, cohort])


def ranked_items(cohort: Path, partitions: int) -> Any:
    """The distinct items among the cohort users' validation and test candidates (a Ray dataset)."""
    import ray.data

    users = str((cohort / COHORT_USERS).resolve())
    columns = [name for name in CANDIDATES if name in pq.ParquetDataset(users).schema.names]
    batches = ray.data.read_parquet(users, columns=columns).map_batches(
        candidate_items_batch, batch_format="pyarrow", **LIGHT
    )
    return batches.groupby("item_id", num_partitions=partitions).count()


def row_and_null_counts(folder: Path, column: str) -> tuple[int, int]:
    """Rows of a folder of Parquet files and the nulls of one column, from the files' metadata."""
    rows = nulls = 0
    for file in sorted(folder.glob("*.parquet")):
        metadata = pq.read_metadata(file)
        rows += metadata.num_rows
        index = metadata.schema.names.index(column)
        for group in range(metadata.num_row_groups):
            statistics = metadata.row_group(group).column(index).statistics
            nulls += statistics.null_count if statistics is not None and statistics.has_null_count else 0
    return rows, nulls


if __name__ == "__main__":
    raise SystemExit(stage_main("priors", sys.argv[1:]))
