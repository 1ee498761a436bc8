"""Stage ``feedback``: what people did with generated posts (the store at ``feedback.uri``) as evidence
for the next refinement.

Ray Data reads the event files, groups them by user and writes one row per user who gave feedback:
``RUN/feedback/evidence.parquet/`` (``user_id``, ``feedback``: the lines the textual-gradient step reads,
``events``, ``actions``: the user's posts per profile version and last action). ``metrics.json`` sums
those into kept, edited and discarded posts, in all and for the profile versions with the most posts. The
stage reruns whenever an event arrives (the store's listing is part of its fingerprint); without a store it
writes an empty evidence table.
Before it reads, once ``feedback.compact_min_files`` event files are older than ``feedback.compact_after_s``,
it compacts them: Ray Data rewrites them as a few segment files and tasks delete them, so the store does not
grow by one small file per event forever.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from jobs.llm_step import LIGHT
from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult
from models.feedback.rows import EVIDENCE_SCHEMA, evidence_of_user, evidence_totals
from models.feedback.store import FeedbackStore, compactable, listing_digest, listing_of
from runtime.artifacts import FEEDBACK_EVIDENCE, hash_partitions
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

log = logging.getLogger("tailormind.feedback")

DELETED_PER_TASK = 10_000


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
    infos = store.event_infos() if store is not None else []  # one listing, unless a compaction changes it
    old = compactable(infos, settings.compact_after_s)
    if store is not None and len(old) >= settings.compact_min_files:
        connect(config.ray, pipeline.runner.run_dir)
        segments = compact_events(store, old, settings.segment_rows)
        log.info("feedback: compacted %d event files into %d segment(s)", len(old), segments)
        infos = store.event_infos()
    listing = listing_of(infos)
    files = [path for path, _ in listing]

    def build(out: Path) -> dict[str, Any]:
        import ray
        import ray.data

        evidence = out / FEEDBACK_EVIDENCE
        if store is None or not files:
            evidence.mkdir()
            pq.write_table(EVIDENCE_SCHEMA.empty_table(), evidence / "empty.parquet")
            totals = evidence_totals(str(evidence))
        else:
            connect(config.ray, pipeline.runner.run_dir)
            stored = ray.data.read_parquet(files, filesystem=store.fs)
            stored.groupby("user_id", num_partitions=hash_partitions(stored.count())).map_groups(
                evidence_of_user, fn_kwargs={"settings": settings}, batch_format="pyarrow", **LIGHT
            ).write_parquet(str(evidence.resolve()))
            totals = ray.get(ray.remote(evidence_totals).options(**LIGHT).remote(str(evidence.resolve())))
        (out / "metrics.json").write_text(json.dumps({**totals, "files": len(files)}, indent=2))
        return {"store": settings.uri, **{k: totals[k] for k in ("events", "profile_versions")}}

    section = {"feedback": settings, "events": listing_digest(listing) if store is not None else None}
    return pipeline.runner.run("feedback", build, config=section)


if __name__ == "__main__":
    raise SystemExit(stage_main("feedback", sys.argv[1:]))
