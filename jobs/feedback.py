"""Stage ``feedback``: what people did with generated posts (the store at ``feedback.uri``) as evidence
for the next refinement.

Ray Data reads the event files, groups them by user and writes one row per user who gave feedback:
``RUN/feedback/evidence.parquet/`` (``user_id``, ``feedback``: the lines the textual-gradient step reads,
``events``). ``metrics.json`` counts kept, edited and discarded posts per profile version. The stage reruns
whenever an event arrives (the store's listing is part of its fingerprint); without a store it writes an
empty evidence table. Before it reads, once ``feedback.compact_min_files`` event files are older than
``feedback.compact_after_s``, it compacts them: Ray Data rewrites them as a few segment files and tasks
delete them, so the store does not grow by one small file per event forever.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.llm_step import LIGHT
from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult
from models.config import FeedbackConfig
from models.feedback.evidence import action_counts, unique_events, user_evidence
from models.feedback.store import FeedbackStore, listing_digest
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

log = logging.getLogger("tailormind.feedback")

EVIDENCE = "evidence.parquet"  # a folder of Parquet files
EVIDENCE_SCHEMA = pa.schema([("user_id", pa.string()), ("feedback", pa.string()), ("events", pa.int64())])
COUNTED = ["event_id", "post_id", "action", "profile_version", "timestamp", "received_at"]
DELETED_PER_TASK = 10_000


def evidence_of_user(events: pa.Table, settings: FeedbackConfig) -> pa.Table:
    """One user's events (a ``groupby`` group) as one evidence row."""
    rows = unique_events(events.to_pylist())
    text = user_evidence(rows, settings.max_events, settings.edit_chars)
    return pa.Table.from_pylist(
        [{"user_id": rows[0]["user_id"], "feedback": text, "events": len(rows)}], schema=EVIDENCE_SCHEMA
    )


def event_counts(uri: str, files: list[str]) -> tuple[int, dict[str, dict[str, int]]]:
    """Distinct events, and kept, edited and discarded posts per profile version (in a task: a few small
    columns per event)."""
    store = FeedbackStore(uri)
    events = unique_events(pq.read_table(files, filesystem=store.fs, columns=COUNTED).to_pylist())
    return len(events), action_counts(events)


def delete_event_files(uri: str, paths: list[str]) -> None:
    """Delete compacted event files (in a task)."""
    FeedbackStore(uri).delete_files(paths)


def compact_events(store: FeedbackStore, files: list[str], segment_rows: int) -> int:
    """Rewrite event ``files`` as segment files of at least ``segment_rows`` events, then delete them;
    return the number of segments."""
    import ray
    import ray.data

    staging = store.staging_folder()
    ray.data.read_parquet(files, filesystem=store.fs).write_parquet(
        staging, filesystem=store.fs, min_rows_per_file=segment_rows
    )
    segments = store.publish_segments(staging)
    chunks = [files[start : start + DELETED_PER_TASK] for start in range(0, len(files), DELETED_PER_TASK)]
    delete = ray.remote(delete_event_files).options(**LIGHT)
    ray.get([delete.remote(store.uri, chunk) for chunk in chunks])
    return segments


def feedback_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``feedback``: RUN/feedback/evidence.parquet/ and metrics.json."""
    config = pipeline.config
    settings = config.feedback
    store = FeedbackStore(settings.uri) if settings.uri is not None else None
    old = store.compactable(settings.compact_after_s) if store is not None else []
    if store is not None and len(old) >= settings.compact_min_files:
        connect(config.ray, pipeline.runner.run_dir)
        segments = compact_events(store, old, settings.segment_rows)
        log.info("feedback: compacted %d event files into %d segment(s)", len(old), segments)
    listing = store.event_listing() if store is not None else []
    files = [path for path, _ in listing]

    def build(out: Path) -> dict[str, Any]:
        import ray
        import ray.data

        evidence = out / EVIDENCE
        events, counts = 0, {}
        if store is None or not files:
            evidence.mkdir()
            pq.write_table(EVIDENCE_SCHEMA.empty_table(), evidence / "empty.parquet")
        else:
            connect(config.ray, pipeline.runner.run_dir)
            stored = ray.data.read_parquet(files, filesystem=store.fs)
            stored.groupby("user_id").map_groups(
                evidence_of_user, fn_kwargs={"settings": settings}, batch_format="pyarrow", **LIGHT
            ).write_parquet(str(evidence.resolve()))
            events, counts = ray.get(ray.remote(event_counts).options(**LIGHT).remote(store.uri, files))
        metrics = {"events": events, "files": len(files), "by_profile_version": counts}
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return {"store": settings.uri, "events": events, "profile_versions": len(counts)}

    section = {"feedback": settings, "events": listing_digest(listing) if store is not None else None}
    return pipeline.runner.run("feedback", build, config=section)


if __name__ == "__main__":
    raise SystemExit(stage_main("feedback", sys.argv[1:]))
