"""Stage ``profiles``: each cohort user's initial preference profile (paper eq. 9) from history + CF items.

Cohort rows stream through one Ray Data pipeline: the evidence prompt (item cards from the captions
stage), the profiler step, the parsed profile. ``RUN/profiles/profile_v0.parquet/`` keeps the cohort's
columns beside the profile, so later stages read one artifact per user. Cold-start users (the cohort's
``cold_start.parquet``) go through the same steps with the catalogue's curated default in place of CF
items, into ``RUN/profiles/cold_start.parquet/`` (they have nothing held out, so refinement skips them).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.broadcast import broadcast_table, mapping_of
from jobs.catalogue import CLUSTERS
from jobs.cohort import COLD_START, USERS
from jobs.llm_step import LIGHT, LLMStep, request_json, row_answers, summed_tallies, tally
from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult
from models.config import TailorMindConfig
from models.llm.config import LLMConfig
from models.llm.prompts import PROFILE, profile_text
from models.profiling.catalogue import Catalogue
from models.profiling.initial import profile_request
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

PROFILES = "profile_v0.parquet"  # a folder of Parquet files
COLD_START_PROFILES = "cold_start.parquet"  # the cold-start users' profiles, beside their few items


def cards_ref(captions_dir: Path) -> Any:
    """The item cards of the captions stage (item_id, card), in the object store."""
    return broadcast_table(str((captions_dir / "items.parquet").resolve()), ["item_id", "card"])


def profile_batch(
    batch: pa.Table, cards: Any, evidence_chars: int, default_cards: list[str] | None = None
) -> pa.Table:
    """The profiler request of each user: history (most recent first) and CF items as cards; a cold-start
    user's few items with the catalogue's ``default_cards`` in the CF items' place."""
    lookup = mapping_of(cards, "item_id", "card")
    requests = [
        [
            request_json(
                profile_request(
                    row["user_id"],
                    [lookup[i] for i in row["history"]],
                    default_cards if default_cards is not None else [lookup[i] for i in row["cf_items"]],
                    evidence_chars,
                )
            )
        ]
        for row in batch.select(
            [c for c in ("user_id", "history", "cf_items") if c in batch.column_names]
        ).to_pylist()
    ]
    return batch.append_column("profile_requests", pa.array(requests, pa.list_(pa.string())))


def parse_batch(batch: pa.Table) -> pa.Table:
    """Each user's preferences (JSON), profile text and error (empty profile when the profiler failed)."""
    preferences, texts, errors, calls = [], [], [], []
    for row in batch.select(["profile_answers", "profile_errors", "profile_attempts"]).to_pylist():
        answer = row_answers(row, "profile")[0]
        value = answer.value["preferences"] if answer.value else []
        preferences.append(json.dumps(value))
        texts.append(profile_text(value))
        errors.append(answer.error)
        calls.append(tally(row, ["profile"]))
    table = batch.drop_columns(["profile_answers", "profile_errors", "profile_attempts"])
    table = table.append_column("preferences", pa.array(preferences, pa.string()))
    table = table.append_column("text", pa.array(texts, pa.string()))
    table = table.append_column("error", pa.array(errors, pa.string()))
    return table.append_column("llm_calls", pa.array(calls, pa.string()))


def _summary(path: str, llm: LLMConfig) -> dict[str, Any]:
    """Users profiled and failed (read in a task: one column per user)."""
    table = pq.read_table(path, columns=["error", "llm_calls"])
    errors = table["error"]
    calls = summed_tallies(table["llm_calls"].to_pylist(), llm, {"profile": "profiler"})
    return {"users": len(errors), "failed": len(errors) - errors.null_count, "llm_calls": calls}


def profiles_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``profiles``: RUN/profiles/profile_v0.parquet/ (cohort columns + profile)."""
    import ray

    config = pipeline.config
    cohort = pipeline.results["cohort"].path
    captions = pipeline.results["captions"].path

    catalogue = pipeline.results.get("catalogue")  # absent when a caller runs the stages without it

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray, pipeline.runner.run_dir)
        cards = cards_ref(captions)
        curated = (
            Catalogue.read(catalogue.path / CLUSTERS, config.coldstart).default()
            if catalogue is not None
            else []
        )
        task = ray.remote(_summary).options(**LIGHT)
        summaries: dict[str, dict[str, Any]] = {}
        for users, written, default in (
            (USERS, PROFILES, None),
            (COLD_START, COLD_START_PROFILES, curated),
        ):
            source = cohort / users
            if pq.read_metadata(source).num_rows:  # a dataset may have no cold-start users
                path = str((out / written).resolve())
                profile_users(str(source.resolve()), cards, default, config).write_parquet(path)
                summaries[written] = ray.get(task.remote(path, config.llm))
        summary = summaries.get(PROFILES, {"users": 0, "failed": 0, "llm_calls": {}})
        cold_start = summaries.get(COLD_START_PROFILES, {"users": 0, "failed": 0, "llm_calls": {}})
        return {**summary, "cold_start": cold_start, "prompt": PROFILE.key}

    section = {
        "profiler": config.llm.profiler,
        "evidence_chars": config.profiling.evidence_chars,
        "default": config.coldstart.model_dump(include={"default_clusters", "default_items_per_cluster"}),
    }
    return pipeline.runner.run(
        "profiles",
        build,
        config={**section, "seed": config.seed},
        inputs=[cohort, captions] + ([catalogue.path] if catalogue is not None else []),
    )


def profile_users(users: str, cards: Any, default: list[str] | None, config: TailorMindConfig) -> Any:
    """The lazy Dataset of the users in Parquet ``users`` with their parsed initial profiles."""
    import ray.data

    asked = ray.data.read_parquet(users).map_batches(
        profile_batch,
        fn_kwargs={
            "cards": cards,
            "evidence_chars": config.profiling.evidence_chars,
            "default_cards": default,
        },
        batch_format="pyarrow",
        **LIGHT,
    )
    answered = LLMStep("profile", config.llm.profiler, config.seed)(asked)
    return answered.map_batches(parse_batch, batch_format="pyarrow", **LIGHT)


if __name__ == "__main__":
    raise SystemExit(stage_main("profiles", sys.argv[1:]))
