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

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.llm_step import LIGHT
from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult
from models.config import FeedbackConfig
from models.feedback.evidence import ACTIONS, action_counts, unique_events, user_evidence
from models.feedback.store import FeedbackStore, compactable, listing_digest, listing_of
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

log = logging.getLogger("tailormind.feedback")

EVIDENCE = "evidence.parquet"  # a folder of Parquet files
ACTION_COUNT = pa.struct([("profile_version", pa.string()), ("action", pa.string()), ("posts", pa.int64())])
EVIDENCE_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("feedback", pa.string()),
        ("events", pa.int64()),
        ("actions", pa.list_(ACTION_COUNT)),  # the user's posts per (profile version, last action)
    ]
)
DELETED_PER_TASK = 10_000
TOP_VERSIONS = 20  # profile versions listed in metrics.json, the most posts first


def evidence_of_user(events: pa.Table, settings: FeedbackConfig) -> pa.Table:
    """One user's events (a ``groupby`` group) as one evidence row."""
    rows = unique_events(events.to_pylist())
    text = user_evidence(rows, settings.max_events, settings.edit_chars)
    actions = [
        {"profile_version": version, "action": action, "posts": posts}
        for version, counts in action_counts(rows).items()
        for action, posts in counts.items()
        if posts
    ]
    row = {"user_id": rows[0]["user_id"], "feedback": text, "events": len(rows), "actions": actions}
    return pa.Table.from_pylist([row], schema=EVIDENCE_SCHEMA)


def evidence_totals(evidence: str, top: int = TOP_VERSIONS) -> dict[str, Any]:
    """Distinct events, kept, edited and discarded posts in all and for the ``top`` profile versions with
    the most posts, summed over the evidence rows (in a task; a post's events all carry its user, so
    per-user counts add up). The summary's size does not grow with the users: a profile version names one
    profile text, so there are about as many as users."""
    table = pq.read_table(evidence, columns=["events", "actions"])
    flat = pc.list_flatten(table["actions"])
    counted = pa.table({name: pc.struct_field(flat, name) for name in ("profile_version", "action", "posts")})
    by_pair = counted.group_by(["profile_version", "action"]).aggregate([("posts", "sum")])
    per_version = by_pair.group_by("profile_version").aggregate([("posts_sum", "sum")])
    leading = per_version.sort_by([("posts_sum_sum", "descending"), ("profile_version", "ascending")])[:top]
    top_versions = {version: dict.fromkeys(ACTIONS, 0) for version in leading["profile_version"].to_pylist()}
    shown = by_pair.filter(pc.is_in(by_pair["profile_version"], value_set=leading["profile_version"]))
    for row in shown.to_pylist():
        top_versions[row["profile_version"]][row["action"]] = row["posts_sum"]
    posts = dict.fromkeys(ACTIONS, 0)
    for row in by_pair.group_by("action").aggregate([("posts_sum", "sum")]).to_pylist():
        posts[row["action"]] = row["posts_sum_sum"]
    return {
        "events": int(pc.sum(table["events"]).as_py() or 0),
        "posts": posts,
        "profile_versions": per_version.num_rows,
        "top_profile_versions": top_versions,
    }


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

        evidence = out / EVIDENCE
        if store is None or not files:
            evidence.mkdir()
            pq.write_table(EVIDENCE_SCHEMA.empty_table(), evidence / "empty.parquet")
            totals = evidence_totals(str(evidence))
        else:
            connect(config.ray, pipeline.runner.run_dir)
            stored = ray.data.read_parquet(files, filesystem=store.fs)
            stored.groupby("user_id").map_groups(
                evidence_of_user, fn_kwargs={"settings": settings}, batch_format="pyarrow", **LIGHT
            ).write_parquet(str(evidence.resolve()))
            totals = ray.get(ray.remote(evidence_totals).options(**LIGHT).remote(str(evidence.resolve())))
        (out / "metrics.json").write_text(json.dumps({**totals, "files": len(files)}, indent=2))
        return {"store": settings.uri, **{k: totals[k] for k in ("events", "profile_versions")}}

    section = {"feedback": settings, "events": listing_digest(listing) if store is not None else None}
    return pipeline.runner.run("feedback", build, config=section)


if __name__ == "__main__":
    raise SystemExit(stage_main("feedback", sys.argv[1:]))
