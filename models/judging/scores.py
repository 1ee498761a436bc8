"""TailorBench's score rows (one per method and user) and their summary per method (``metrics.json``)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from models.config import TailorMindConfig
from models.evaluation import mean_with_ci
from models.llm.prompts import JUDGE_FACTS, JUDGE_QUALITY
from models.llm.rows import summed_tallies

METRICS = ("coherence", "novelty", "aesthetic", "hallucination")
SCORE_SCHEMA = pa.schema(
    [
        ("method", pa.string()),
        ("user_id", pa.string()),
        *((metric, pa.float64()) for metric in METRICS),
        ("judge_errors", pa.string()),
        ("judge_requests", pa.int64()),
        ("judge_failures", pa.int64()),
        ("judge_retries", pa.int64()),
        ("failed_post", pa.bool_()),
        ("llm_calls", pa.string()),  # {role: [requests, failed, retries]} of the judge actor's batch
    ]
)


def judge_metrics(scores: str, config: TailorMindConfig) -> dict[str, Any]:
    """Per method and metric: mean, 95% interval and n; judge failures and retries (in a task)."""
    rows = pq.read_table(scores).to_pylist()
    methods = {
        method: {
            metric: mean_with_ci([r[metric] for r in rows if r["method"] == method], seed=config.seed)
            for metric in METRICS
        }
        for method in config.judge.methods
    }
    return {
        "methods": methods,
        "num_users": len({row["user_id"] for row in rows}),
        "judge_requests": sum(row["judge_requests"] for row in rows),
        "judge_failures": sum(row["judge_failures"] for row in rows),
        "judge_retries": sum(row["judge_retries"] for row in rows),
        "failed_posts": sum(1 for row in rows if row["failed_post"]),
        "indistinct": indistinct_metrics(rows),
        "judge_model": config.llm.judge.model_source,
        "visual_judge_model": config.llm.visual_judge.model_source,
        "llm_calls": summed_tallies([row["llm_calls"] for row in rows], config.llm, {}),
        "prompts": [JUDGE_QUALITY.key, JUDGE_FACTS.key],
    }


def indistinct_metrics(rows: list[dict[str, Any]]) -> list[str]:
    """The metrics on which every user's generated posts (every method but the ground truth) scored alike,
    over the users with two or more scored posts: those rows cannot compare the methods."""
    generated = [row for row in rows if row["method"] != "ground_truth"]
    if len({row["method"] for row in generated}) < 2:
        return []
    found = []
    for metric in METRICS:
        per_user: dict[str, list[float]] = {}
        for row in generated:
            if _scored(row[metric]):
                per_user.setdefault(row["user_id"], []).append(round(row[metric], 9))
        compared = [values for values in per_user.values() if len(values) >= 2]
        if compared and all(len(set(values)) == 1 for values in compared):
            found.append(metric)
    return found


def _scored(value: float | None) -> bool:
    """Whether a score was given (None or NaN: a failed post or answer)."""
    return value is not None and value == value
