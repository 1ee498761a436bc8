"""Ranking metrics with bootstrap confidence intervals (TailorBench's 1:99 reranking), at any scale.

The intervals come from a Poisson bootstrap: in resample b, user u counts ``w(u, b)`` times, with w drawn
from Poisson(1) by a hash of (seed, user key, b). A block of users reduces to per-resample sums of
weights and weighted values, which add across blocks in any order, so a million users' intervals need no
index matrix and the driver holds only ``resamples`` numbers per metric. Rankers scored on the same users
get the same weights, so differences between them keep their pairing.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

KS = (10, 20)
RESAMPLES = 1000
# P(Poisson(1) <= k) for k = 0..11: a uniform below entry k draws k
_POISSON_CDF = np.cumsum([np.exp(-1.0) / np.prod(np.arange(1, k + 1)) for k in range(12)])


def user_keys(ids: Sequence[str]) -> np.ndarray:
    """A stable 32-bit key per user id (what the bootstrap weights are drawn from)."""
    return np.array([zlib.crc32(str(i).encode()) for i in ids], np.uint64)


def poisson_weights(keys: np.ndarray, seed: int, resamples: int = RESAMPLES) -> np.ndarray:
    """[users, resamples] Poisson(1) weights, a function of (seed, user key, resample) alone."""
    resample = np.arange(resamples, dtype=np.uint64)
    state = (keys.astype(np.uint64)[:, None] << np.uint64(32)) ^ resample[None, :]
    state = state ^ np.uint64((seed * 0x9E3779B97F4A7C15) % 2**64)
    uniform = _splitmix64(state) >> np.uint64(11)
    return np.searchsorted(_POISSON_CDF, uniform.astype(np.float64) / 2**53).astype(np.float64)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


@dataclass
class BootstrapSums:
    """Per-user values of named metrics, reduced to what their means and bootstrap intervals need.

    ``add`` a block (user keys and a value per user for each metric), ``merge`` partial sums from other
    blocks, then ``summary()``.
    """

    seed: int = 0
    resamples: int = RESAMPLES
    users: int = 0
    totals: dict[str, float] = field(default_factory=dict)
    weights: np.ndarray | None = None  # [resamples] summed weights
    weighted: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> [resamples] weighted sums

    def add(self, keys: np.ndarray, values: Mapping[str, np.ndarray]) -> None:
        """One block of users."""
        w = poisson_weights(keys, self.seed, self.resamples)
        self.users += len(keys)
        self.weights = w.sum(axis=0) + (self.weights if self.weights is not None else 0.0)
        for name, column in values.items():
            column = np.asarray(column, np.float64)
            self.totals[name] = self.totals.get(name, 0.0) + float(column.sum())
            self.weighted[name] = column @ w + self.weighted.get(name, 0.0)

    def merge(self, other: BootstrapSums) -> None:
        """Add another block's sums (same seed and resamples)."""
        if other.weights is None:
            return
        self.users += other.users
        self.weights = other.weights + (self.weights if self.weights is not None else 0.0)
        for name, total in other.totals.items():
            self.totals[name] = self.totals.get(name, 0.0) + total
            self.weighted[name] = other.weighted[name] + self.weighted.get(name, 0.0)

    def mean(self, name: str) -> float:
        """The metric's mean over every user added."""
        return self.totals[name] / self.users if self.users else float("nan")

    def draws(self, name: str) -> np.ndarray:
        """The metric's mean in each resample (NaN in a resample that drew no user)."""
        assert self.weights is not None
        drawn = self.weights > 0
        return np.where(drawn, self.weighted[name] / np.where(drawn, self.weights, 1.0), np.nan)

    def interval(self, name: str, minus: str | None = None) -> list[float]:
        """95% interval of a metric's mean, or of its difference from another metric of the same users."""
        if self.weights is None:
            return [float("nan"), float("nan")]
        draws = self.draws(name) - (self.draws(minus) if minus else 0.0)
        return [float(np.nanpercentile(draws, 2.5)), float(np.nanpercentile(draws, 97.5))]


def rank_values(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, np.ndarray]:
    """Per-user Recall@k (hit) and NDCG@k of 0-based single-positive ranks, and reciprocal rank (mrr)."""
    ranks = np.asarray(ranks, np.float64)
    values = {}
    for k in ks:
        hit = ranks < k
        values[f"recall@{k}"] = hit.astype(np.float64)
        values[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
    values["mrr"] = 1.0 / (ranks + 1.0)
    return values


def metrics_with_ci(
    ranks: np.ndarray,
    ks: Sequence[int] = KS,
    resamples: int = RESAMPLES,
    seed: int = 0,
    keys: np.ndarray | None = None,
) -> dict:
    """Recall/NDCG@k of 0-based ranks, the user count, and 95% Poisson-bootstrap intervals over users
    (``keys``: the users' bootstrap keys, by default their positions)."""
    ranks = np.asarray(ranks)
    sums = BootstrapSums(seed, resamples)
    if len(ranks):
        sums.add(np.arange(len(ranks)) if keys is None else keys, rank_values(ranks, ks))
    return summary(sums, [m for k in ks for m in (f"recall@{k}", f"ndcg@{k}")])


def summary(sums: BootstrapSums, names: Sequence[str]) -> dict:
    """``{name: mean, ..., "num_users": n, "ci95": {name: [low, high]}}`` of the named metrics."""
    point = {name: sums.mean(name) if sums.users else float("nan") for name in names}
    return {**point, "num_users": sums.users, "ci95": {name: sums.interval(name) for name in names}}


def ranks_from_scores(scores: np.ndarray) -> np.ndarray:
    """0-based rank of column 0 in each row of candidate scores, ties counted against it."""
    return (scores[:, 1:] >= scores[:, :1]).sum(axis=1)


def mean_with_ci(values: Sequence[float], resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Mean of the finite values, their count, and a 95% bootstrap interval of the mean."""
    finite = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if not len(finite):
        return {"mean": None, "ci95": [None, None], "n": 0}
    sums = BootstrapSums(seed, resamples)
    sums.add(np.arange(len(finite)), {"value": finite})
    return {"mean": sums.mean("value"), "ci95": sums.interval("value"), "n": len(finite)}


def label_counts(lists: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    """Rows per label of a list<string> column (what was degenerate, say), and rows with any (``any``)."""
    flat = pc.list_flatten(lists)
    counts = pc.value_counts(flat).to_pylist() if len(flat) else []
    out = {entry["values"]: int(entry["counts"]) for entry in counts}
    return {**out, "any": int(pc.sum(pc.greater(pc.list_value_length(lists), 0)).as_py() or 0)}


def finite_mean(values: Sequence[float | None]) -> float | None:
    """Mean of the finite values (None when there are none: JSON has no NaN)."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None
