"""What the generate stage reports: one summary row per user's post (``posts.parquet``) and their counts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from models.evaluation import label_counts
from models.generation.writer import GeneratedPost
from models.llm.config import LLMConfig
from models.llm.rows import summed_tallies
from models.profiling.drift import TasteSpread

Spreads = tuple[float | None, float | None]  # taste spread of a user's history and of their post's text

SUMMARY_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("page", pa.string()),
        ("versions", pa.int64()),
        ("best_score", pa.float64()),
        ("errors", pa.list_(pa.string())),
        ("refusal", pa.string()),  # why the safety gate refused every version, else null
        ("safety_flags", pa.int64()),  # flags raised over all versions
        ("degenerate", pa.list_(pa.string())),  # what is still degenerate in the best version's text
        ("llm_calls", pa.string()),  # {role: [requests, failed, retries]} of the writer actor's batch
        ("spread_history", pa.float64()),  # taste spread of the history (models.profiling.drift)
        ("spread_post", pa.float64()),  # and of the best post's text
    ]
)


def summary_table(
    posts: Sequence[GeneratedPost], pages: Sequence[str], calls: str, spreads: Sequence[Spreads]
) -> pa.Table:
    """One summary row per user: page, versions, best score, errors, safety, drift; the batch's LLM
    ``calls`` on its first row."""
    rows: list[dict[str, Any]] = []
    for post, page, (history_spread, post_spread) in zip(posts, pages, spreads, strict=True):
        best = post.versions[post.best].score if post.best >= 0 else None
        rows.append(
            {
                "user_id": post.user_id,
                "page": page,
                "versions": len(post.versions),
                "best_score": best,
                "errors": post.errors,
                "refusal": post.refusal,
                "safety_flags": post.flags,
                "degenerate": post.versions[post.best].degenerate if post.best >= 0 else [],
                "llm_calls": None if rows else calls,
                "spread_history": history_spread,
                "spread_post": post_spread,
            }
        )
    return pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA)


def post_spreads(
    spread: TasteSpread | None, users: pa.Table, posts: Sequence[GeneratedPost]
) -> list[Spreads]:
    """Taste spread (drift) of each user's history (``users``: user_id, history) and of their best post's
    text (None: unmeasured)."""
    if spread is None:
        return [(None, None)] * len(posts)
    histories = dict(zip(users["user_id"].to_pylist(), users["history"].to_pylist(), strict=True))
    best = [post.versions[post.best] if post.best >= 0 else None for post in posts]
    texts = ["\n".join([v.title, v.body, *v.tags]) if v is not None else "" for v in best]
    of_history = [spread.of_items(histories[post.user_id]) for post in posts]
    of_post = spread.of_texts(texts).tolist()
    return [
        (a if np.isfinite(a) else None, b if np.isfinite(b) else None)
        for a, b in zip(of_history, of_post, strict=True)
    ]


def summarise_posts(posts: str, llm: LLMConfig) -> dict[str, Any]:
    """The stage's counts over every user's summary row in the Parquet folder ``posts``, read block by
    block (in a task)."""
    import pyarrow.dataset

    counts: dict[str, float] = dict.fromkeys(
        (
            "users",
            "failed",
            "refused",
            "flags",
            "fallbacks",
            "versions",
            "scored",
            "score",
            "history",
            "posts",
        ),
        0,
    )
    degenerate: dict[str, int] = {}
    calls: dict[str, dict[str, Any]] = {}
    spreads = {"history": [0.0, 0], "posts": [0.0, 0]}
    for batch in pyarrow.dataset.dataset(Path(posts), format="parquet").to_batches():
        rows = batch.to_pylist()
        counts["users"] += len(rows)
        counts["failed"] += sum(r["best_score"] is None and r["refusal"] is None for r in rows)
        counts["refused"] += sum(r["refusal"] is not None for r in rows)
        counts["flags"] += sum(r["safety_flags"] for r in rows)
        counts["fallbacks"] += sum(bool(r["errors"]) for r in rows)
        counts["versions"] += sum(r["versions"] for r in rows)
        scores = [r["best_score"] for r in rows if r["best_score"] is not None]
        counts["scored"], counts["score"] = counts["scored"] + len(scores), counts["score"] + sum(scores)
        for label, n in label_counts(batch.column("degenerate")).items():
            degenerate[label] = degenerate.get(label, 0) + n
        for step, tally in summed_tallies([r["llm_calls"] for r in rows], llm, {}).items():
            merged = calls.setdefault(step, {**tally, "requests": 0, "failed": 0, "retries": 0})
            for key in ("requests", "failed", "retries"):
                merged[key] += tally[key]
        for name, column in (("history", "spread_history"), ("posts", "spread_post")):
            finite = [r[column] for r in rows if r[column] is not None and np.isfinite(r[column])]
            spreads[name][0] += sum(finite)
            spreads[name][1] += len(finite)
    users = int(counts["users"])
    return {
        "users": users,
        "failed": int(counts["failed"]),
        "refused_by_safety": int(counts["refused"]),
        "safety_flags": int(counts["flags"]),
        "degenerate": degenerate,
        "with_fallbacks": int(counts["fallbacks"]),
        "mean_versions": counts["versions"] / max(1, users),
        "mean_best_score": counts["score"] / max(1, users),
        "llm_calls": calls,
        "drift": {name: (total / n if n else None) for name, (total, n) in spreads.items()},
    }
