"""What the run report shows, read from a run folder's small files: metrics, summaries, a few traces and the
sampled posts. Rendering (``models.report.render``) only formats this object.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from models.report.posts import PostSummary, PostTotals, read_post

RANKING_METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
LLM_STAGES = ("captions", "catalogue", "priors", "profiles", "refine", "eval", "generate", "judge")
TRACED_USERS = 6  # users whose refinement the report shows round by round


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% confidence interval."""

    mean: float
    low: float
    high: float


@dataclass
class ReportData:
    """Everything the report shows; ``None`` marks a stage that did not run."""

    cf: dict[str, Any] | None = None
    profiling: dict[str, dict[str, Interval]] | None = None
    profiling_popular: dict[str, dict[str, Interval]] | None = None
    profiling_users: int | None = None
    candidates: int = 100  # per user in the 1:N reranking: the positive and its negatives
    ranker_failures: dict[str, int] = field(default_factory=dict)  # failed LLM answers, counted as misses
    ranker_in_shown_order: dict[str, int] = field(default_factory=dict)  # listwise: shown order answered
    profiling_note: str = ""
    fusion_weight: float | None = None
    drift: dict[str, Any] | None = None
    post_drift: dict[str, Any] | None = None
    traces: list[dict[str, Any]] = field(default_factory=list)
    degenerate: dict[str, dict[str, int]] = field(default_factory=dict)  # stage -> what was degenerate
    judge: dict[str, dict[str, Interval]] | None = None
    judge_facts: dict[str, Any] = field(default_factory=dict)
    post_totals: PostTotals | None = None
    posts: list[PostSummary] | None = None  # the sampled users' posts
    index: str | None = None  # the paged index of every post, relative to the run folder
    llm_calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    feedback: dict[str, Any] | None = None
    cold_start: dict[str, Any] | None = None


def read_run(run_dir: Path, totals: PostTotals | None = None) -> ReportData:
    """The report of the stages found under ``run_dir``; ``totals`` are the posts' totals and sample (the
    report stage folds them with Ray Data; without them they are read here, for small runs and tests)."""
    evaluation = _read_json(run_dir / "eval" / "metrics.json") or {}
    judge = _read_json(run_dir / "judge" / "metrics.json")
    generate = run_dir / "generate"
    if totals is None and (generate / "posts.parquet").exists():
        totals = PostTotals()
        totals.add(pq.read_table(generate / "posts.parquet"))
    return ReportData(
        cf=_read_json(run_dir / "cf" / "metrics.json"),
        profiling=ranker_intervals(evaluation) if evaluation else None,
        profiling_popular=ranker_intervals(evaluation, "rankers_popularity_matched") or None,
        profiling_users=evaluation.get("num_users"),
        candidates=evaluation.get("candidates", 100),
        ranker_failures=_ranker_counts(evaluation, "failed"),
        ranker_in_shown_order=_ranker_counts(evaluation, "in_shown_order"),
        profiling_note=evaluation.get("note", ""),
        fusion_weight=evaluation.get("fusion_weight"),
        drift=evaluation.get("drift"),
        post_drift=(_summary(generate) or {}).get("drift"),
        traces=read_traces(run_dir / "refine" / "profiles.parquet"),
        degenerate=read_degenerate(run_dir),
        judge=judge_intervals(judge) if judge else None,
        judge_facts={k: v for k, v in judge.items() if k != "methods"} if judge else {},
        post_totals=totals,
        posts=[read_post(generate, page) for _, page in totals.sampled()] if totals is not None else None,
        index="generate/index.html" if (generate / "index.html").is_file() else None,
        llm_calls=read_llm_calls(run_dir),
        feedback=_read_json(run_dir / "feedback" / "metrics.json"),
        cold_start=read_cold_start(run_dir),
    )


def ranker_intervals(evaluation: dict[str, Any], key: str = "rankers") -> dict[str, dict[str, Interval]]:
    """Each ranker's 1:N reranking metrics with their intervals, from ``RUN/eval/metrics.json``."""
    return {
        ranker: {
            metric: Interval(values[metric], *values["ci95"][metric])
            for metric in RANKING_METRICS
            if metric in values
        }
        for ranker, values in evaluation.get(key, {}).items()
    }


def judge_intervals(judge: dict[str, Any]) -> dict[str, dict[str, Interval]]:
    """Each method's judge metrics with their intervals (NaN where no value was finite)."""
    return {
        method: {name: Interval(*_floats(value["mean"], *value["ci95"])) for name, value in metrics.items()}
        for method, metrics in judge["methods"].items()
    }


def read_traces(published: Path, users: int = TRACED_USERS) -> list[dict[str, Any]]:
    """The first ``users`` refined users' initial profile, each round's rank, gradient and profile, and
    their refined profile (from the first file of the refine stage's output only)."""
    files = sorted(published.glob("*.parquet")) if published.is_dir() else []
    if not files:
        return []
    columns = ["user_id", "profile_initial", "profile_refined", "best_round", "valid_ranks", "round_profiles"]
    columns += [c for c in ("round_gradients",) if c in pq.read_schema(files[0]).names]
    return pq.read_table(files[0], columns=columns).slice(0, users).to_pylist()


def read_degenerate(run_dir: Path) -> dict[str, dict[str, int]]:
    """What was degenerate in each stage's LLM text (profiles, posts), from the stage markers."""
    found = {}
    for stage in ("profiles", "generate"):
        summary = _summary(run_dir / stage) or {}
        if "degenerate" in summary:
            found[stage] = {
                **summary["degenerate"],
                **({"repaired": summary["repaired"]} if "repaired" in summary else {}),
            }
    return found


def read_cold_start(run_dir: Path) -> dict[str, Any] | None:
    """The catalogue stage's questions and the profiles stage's cold-start counts (None: not run)."""
    catalogue = _summary(run_dir / "catalogue")
    if catalogue is None:
        return None
    return {
        "questions": catalogue["questions"],
        "unlabelled": catalogue["unlabelled"],
        "profiled": (_summary(run_dir / "profiles") or {}).get("cold_start"),
    }


def read_llm_calls(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Each LLM stage's calls per step (role, model, requests, failed, retries), from its stage marker."""
    calls = {}
    for stage in LLM_STAGES:
        summary = _summary(run_dir / stage) or {}
        if summary.get("llm_calls"):
            calls[stage] = summary["llm_calls"]
    return calls


def _ranker_counts(evaluation: dict[str, Any], count: str) -> dict[str, int]:
    """One count (failed, in_shown_order) of each ranker that has it in the eval metrics."""
    return {name: int(v[count]) for name, v in evaluation.get("rankers", {}).items() if count in v}


def _summary(stage_dir: Path) -> dict[str, Any] | None:
    marker = _read_json(stage_dir / "_stage.json")
    return marker.get("summary") if marker is not None else None


def _floats(*values: float | None) -> list[float]:
    return [math.nan if value is None else float(value) for value in values]


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None
