"""Stage ``profiles``: each cohort user's initial preference profile (paper eq. 9) from history + CF items.

Cohort rows stream through one Ray Data pipeline: the evidence prompt (item cards from the captions
stage), the profiler step, the parsed profile. ``RUN/profiles/profile_v0.parquet/`` keeps the cohort's
columns beside the profile, so later stages read one artifact per user.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.broadcast import broadcast_table, mapping_of
from jobs.llm_step import LIGHT, LLMStep, request_json, row_answers, summed_tallies, tally
from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult
from models.llm.config import LLMConfig
from models.llm.prompts import PROFILE, profile_text
from models.profiling.initial import profile_request
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

PROFILES = "profile_v0.parquet"  # a folder of Parquet files


def cards_ref(captions_dir: Path) -> Any:
    """The item cards of the captions stage (item_id, card), in the object store."""
    return broadcast_table(str((captions_dir / "items.parquet").resolve()), ["item_id", "card"])


def profile_batch(batch: pa.Table, cards: Any, evidence_chars: int) -> pa.Table:
    """The profiler request of each user: history (most recent first) and CF items as cards."""
    lookup = mapping_of(cards, "item_id", "card")
    requests = [
        [
            request_json(
                profile_request(
                    row["user_id"],
                    [lookup[i] for i in row["history"]],
                    [lookup[i] for i in row["cf_items"]],
                    evidence_chars,
                )
            )
        ]
        for row in batch.select(["user_id", "history", "cf_items"]).to_pylist()
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
    import ray.data

    config = pipeline.config
    cohort = pipeline.results["cohort"].path
    captions = pipeline.results["captions"].path

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray, pipeline.runner.run_dir)
        users = ray.data.read_parquet(str((cohort / "users.parquet").resolve()))
        asked = users.map_batches(
            profile_batch,
            fn_kwargs={"cards": cards_ref(captions), "evidence_chars": config.profiling.evidence_chars},
            batch_format="pyarrow",
            **LIGHT,
        )
        answered = LLMStep("profile", config.llm.profiler, config.seed)(asked)
        answered.map_batches(parse_batch, batch_format="pyarrow", **LIGHT).write_parquet(
            str((out / PROFILES).resolve())
        )
        task = ray.remote(_summary).options(**LIGHT)
        summary = ray.get(task.remote(str((out / PROFILES).resolve()), config.llm))
        return {**summary, "prompt": PROFILE.key}

    section = {"profiler": config.llm.profiler, "evidence_chars": config.profiling.evidence_chars}
    return pipeline.runner.run(
        "profiles", build, config={**section, "seed": config.seed}, inputs=[cohort, captions]
    )


if __name__ == "__main__":
    raise SystemExit(stage_main("profiles", sys.argv[1:]))
