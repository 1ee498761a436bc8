"""CF + profile fusion: each user's candidate scores from both, standardised, added with a weight on the
profile's that validation alone chooses (the only place a profile can add to CF on this protocol)."""

from __future__ import annotations

import numpy as np

FUSION_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def standardised(scores: np.ndarray) -> np.ndarray:
    """Each row's finite scores as z-scores (a constant row becomes zeros); a non-finite score sinks to the
    row's finite minimum less one, so it ranks last without overflowing a weighted sum."""
    scores = np.asarray(scores, np.float64)
    finite = np.isfinite(scores)
    count = np.maximum(finite.sum(axis=1, keepdims=True), 1)
    filled = np.where(finite, scores, 0.0)
    mean = filled.sum(axis=1, keepdims=True) / count
    spread = np.sqrt((np.where(finite, scores - mean, 0.0) ** 2).sum(axis=1, keepdims=True) / count)
    z = np.where(finite, (filled - mean) / np.where(spread > 0, spread, 1.0), 0.0)
    floor = np.where(finite, z, np.inf).min(axis=1, keepdims=True)
    return np.where(finite, z, np.where(np.isfinite(floor), floor, 0.0) - 1.0)


def fused(cf: np.ndarray, profile: np.ndarray, weight: float) -> np.ndarray:
    """Standardised CF scores plus ``weight`` times standardised profile scores, [users, candidates]."""
    return standardised(cf) + weight * standardised(profile)


def positive_ranks_rows(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """[users, max positives] 0-based rank of each positive column (the first ``positives[u]`` of row u)
    among the row's negative columns, ties against the positive; NaN where a row has fewer positives."""
    users, columns = scores.shape
    width = int(positives.max()) if users else 0
    out = np.full((users, width), np.nan)
    negative = np.arange(columns)[None, :] >= positives[:, None]
    for j in range(width):
        has = positives > j
        above = (scores >= scores[:, [j]]) & negative
        out[has, j] = above[has].sum(axis=1)
    return out


def mean_reciprocal_rank(ranks: np.ndarray) -> np.ndarray:
    """Per row, the mean of 1 / (rank + 1) over its positives (NaN entries ignored)."""
    return np.nanmean(1.0 / (ranks + 1.0), axis=1)
