"""Stage ``feedback``: what people did with generated posts (the store at ``feedback.uri``) as evidence
for the next refinement.

Ray Data reads the event files, groups them by user and writes one row per user who gave feedback:
``RUN/feedback/evidence.parquet/`` (``user_id``, ``feedback``: the lines the textual-gradient step reads,
``events``). ``metrics.json`` counts kept, edited and discarded posts per profile version. The stage reruns
whenever an event arrives (the store's listing is part of its fingerprint); without a store it writes an
empty evidence table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.llm_step import LIGHT
from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult
from models.config import FeedbackConfig
from models.feedback.evidence import action_counts, user_evidence
from models.feedback.store import FeedbackStore, listing_digest
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

EVIDENCE = "evidence.parquet"  # a folder of Parquet files
EVIDENCE_SCHEMA = pa.schema([("user_id", pa.string()), ("feedback", pa.string()), ("events", pa.int64())])
COUNTED = ["event_id", "post_id", "action", "profile_version", "timestamp"]


def evidence_of_user(events: pa.Table, settings: FeedbackConfig) -> pa.Table:
    """One user's events (a ``groupby`` group) as one evidence row."""
    rows = events.to_pylist()
    text = user_evidence(rows, settings.max_events, settings.edit_chars)
    return pa.Table.from_pylist(
        [{"user_id": rows[0]["user_id"], "feedback": text, "events": len(rows)}], schema=EVIDENCE_SCHEMA
    )


def counts_by_profile_version(uri: str, files: list[str]) -> dict[str, dict[str, int]]:
    """Kept, edited and discarded posts per profile version (in a task: a few small columns per event)."""
    store = FeedbackStore(uri)
    table = pq.read_table(files, filesystem=store.fs, columns=COUNTED)
    return action_counts(table.to_pylist())


def feedback_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``feedback``: RUN/feedback/evidence.parquet/ and metrics.json."""
    config = pipeline.config
    settings = config.feedback
    store = FeedbackStore(settings.uri) if settings.uri is not None else None
    listing = store.event_listing() if store is not None else []
    files = [path for path, _ in listing]

    def build(out: Path) -> dict[str, Any]:
        import ray
        import ray.data

        evidence = out / EVIDENCE
        counts: dict[str, dict[str, int]] = {}
        if store is None or not files:
            evidence.mkdir()
            pq.write_table(EVIDENCE_SCHEMA.empty_table(), evidence / "empty.parquet")
        else:
            connect(config.ray, pipeline.runner.run_dir)
            events = ray.data.read_parquet(files, filesystem=store.fs)
            events.groupby("user_id").map_groups(
                evidence_of_user, fn_kwargs={"settings": settings}, batch_format="pyarrow", **LIGHT
            ).write_parquet(str(evidence.resolve()))
            counts = ray.get(
                ray.remote(counts_by_profile_version).options(**LIGHT).remote(settings.uri, files)
            )
        metrics = {"events": len(files), "by_profile_version": counts}
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return {"store": settings.uri, "events": len(files), "profile_versions": len(counts)}

    section = {"feedback": settings, "events": listing_digest(listing) if store is not None else None}
    return pipeline.runner.run("feedback", build, config=section)


if __name__ == "__main__":
    raise SystemExit(stage_main("feedback", sys.argv[1:]))
