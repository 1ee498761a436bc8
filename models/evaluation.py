"""Ranking metrics with bootstrap confidence intervals (TailorBench's 1:99 reranking)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.cf import rank_metrics

KS = (10, 20)


def metrics_with_ci(ranks: np.ndarray, ks: Sequence[int] = KS, resamples: int = 1000, seed: int = 0) -> dict:
    """Recall/NDCG@k of 0-based ranks, the user count, and 95% bootstrap intervals over users."""
    ranks = np.asarray(ranks)
    point = rank_metrics(ranks, ks)
    rng = np.random.default_rng(seed)
    samples = ranks[rng.integers(0, len(ranks), size=(resamples, len(ranks)))] if len(ranks) else ranks[None]
    draws: dict[str, list[float]] = {key: [] for key in point}
    for sample in samples:
        for key, value in rank_metrics(sample, ks).items():
            draws[key].append(value)
    ci95 = {
        key: [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))] for key, v in draws.items()
    }
    return {**point, "num_users": len(ranks), "ci95": ci95}


def ranks_from_scores(scores: np.ndarray) -> np.ndarray:
    """0-based rank of column 0 in each row of candidate scores, ties counted against it."""
    return (scores[:, 1:] >= scores[:, :1]).sum(axis=1)


def mean_with_ci(values: Sequence[float], resamples: int = 1000, seed: int = 0) -> dict:
    """Mean of the finite values, their count, and a 95% bootstrap interval of the mean."""
    finite = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if not len(finite):
        return {"mean": None, "ci95": [None, None], "n": 0}
    draws = finite[np.random.default_rng(seed).integers(0, len(finite), size=(resamples, len(finite)))]
    means = draws.mean(axis=1)
    return {
        "mean": float(finite.mean()),
        "ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
        "n": len(finite),
    }


def finite_mean(values: Sequence[float | None]) -> float | None:
    """Mean of the finite values (None when there are none: JSON has no NaN)."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None
