"""The profiled users, their evidence items and their 1:99 candidate sets, as index arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from models.data import EncodedInteractions, sample_candidates


@dataclass(frozen=True)
class Cohort:
    """Sampled users (those with valid and test positives) with their history and candidates."""

    users: np.ndarray  # user indices, sorted
    history: list[np.ndarray]  # per user: train item indices, most recent first, truncated
    valid_candidates: np.ndarray  # [U, 1 + negatives], positive in column 0
    test_candidates: np.ndarray  # [U, 1 + negatives], positive in column 0

    def items(self) -> np.ndarray:
        """Every item index any part of the cohort refers to."""
        parts = [*self.history, self.valid_candidates.ravel(), self.test_candidates.ravel()]
        return np.unique(np.concatenate(parts)) if parts else np.array([], dtype=np.int64)


def select_cohort(
    encoded: EncodedInteractions,
    max_users: int | None,
    history_items: int,
    seed: int,
    num_negatives: int = 99,
) -> Cohort:
    """A seeded sample of users with held-out items, their recent history and their candidate sets."""
    valid = sample_candidates(encoded, "valid", num_negatives=num_negatives, seed=seed, salt="profiling")
    test = sample_candidates(encoded, "test", num_negatives=num_negatives, seed=seed, salt="profiling")
    eligible = np.intersect1d(valid.users, test.users)
    if max_users is not None and len(eligible) > max_users:
        eligible = np.sort(np.random.default_rng(seed).choice(eligible, max_users, replace=False))
    train = encoded.mask(("train",))
    order = np.lexsort((-encoded.timestamp[train], encoded.user[train]))
    users_sorted, items_sorted = encoded.user[train][order], encoded.item[train][order]
    starts = np.searchsorted(users_sorted, eligible)
    ends = np.searchsorted(users_sorted, eligible, side="right")
    history = [items_sorted[s : min(e, s + history_items)] for s, e in zip(starts, ends, strict=True)]
    return Cohort(
        users=eligible,
        history=history,
        valid_candidates=valid.candidates[np.searchsorted(valid.users, eligible)],
        test_candidates=test.candidates[np.searchsorted(test.users, eligible)],
    )


def cf_recommendations(
    topk: pa.Table | None, user_ids: pa.Array, item_ids: pa.Array, k: int
) -> dict[str, list[int]]:
    """user_id -> the first ``k`` CF top-K item indices (empty when there is no CF output)."""
    if topk is None or k == 0:
        return {}
    position = {item: index for index, item in enumerate(item_ids.to_pylist())}
    wanted = set(user_ids.to_pylist())
    return {
        row["user_id"]: [position[i] for i in row["item_ids"][:k]]
        for row in topk.select(["user_id", "item_ids"]).to_pylist()
        if row["user_id"] in wanted
    }
