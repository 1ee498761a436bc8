"""The feedback evidence table: one row per user who gave feedback, and its totals (posts kept, edited and
discarded, in all and for the profile versions with the most posts)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.config import FeedbackConfig
from models.feedback.evidence import ACTIONS, action_counts, unique_events, user_evidence

ACTION_COUNT = pa.struct([("profile_version", pa.string()), ("action", pa.string()), ("posts", pa.int64())])
EVIDENCE_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("feedback", pa.string()),
        ("events", pa.int64()),
        ("actions", pa.list_(ACTION_COUNT)),  # the user's posts per (profile version, last action)
    ]
)
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
