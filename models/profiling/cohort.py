"""The profiled users, their evidence items and their 1:99 candidate sets, as index arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


def cohort_table(
    encoded: EncodedInteractions, cohort: Cohort, topk: pa.Table | None, cf_items: int
) -> pa.Table:
    """One row per profiled user, by item id: history (most recent first), CF items, seen items, candidates.

    ``seen_items`` (every item the user interacted with, any split) lets validation negatives be redrawn.
    """
    user_ids = encoded.user_ids.take(pa.array(cohort.users, pa.int64()))
    items = encoded.item_ids

    def id_lists(rows: list[np.ndarray]) -> pa.Array:
        offsets = np.r_[0, np.cumsum([len(r) for r in rows])].astype(np.int32)
        flat = np.concatenate(rows).astype(np.int64) if rows else np.array([], dtype=np.int64)
        return pa.ListArray.from_arrays(pa.array(offsets), items.take(pa.array(flat)))

    seen_matrix = encoded.matrix(("train", "valid", "test"))
    seen = [seen_matrix.indices[seen_matrix.indptr[u] : seen_matrix.indptr[u + 1]] for u in cohort.users]
    return pa.table(
        {
            "user_id": user_ids,
            "history": id_lists(cohort.history),
            "cf_items": cf_recommendations(topk, user_ids, cf_items),
            "seen_items": id_lists(seen),
            "valid_candidates": id_lists(list(cohort.valid_candidates)),
            "test_candidates": id_lists(list(cohort.test_candidates)),
        }
    )


def cf_recommendations(topk: pa.Table | None, user_ids: pa.Array, k: int) -> pa.Array:
    """The first ``k`` CF top-K item ids of each user (empty lists without CF output or for unknown users)."""
    empty = pa.array([[] for _ in range(len(user_ids))], pa.list_(pa.string()))
    if topk is None or k == 0:
        return empty
    rows = pc.index_in(user_ids, value_set=topk["user_id"].combine_chunks())
    lists = topk["item_ids"].combine_chunks().take(pc.fill_null(rows, 0))
    firsts = [
        ids[:k] if row is not None else []
        for ids, row in zip(lists.to_pylist(), rows.to_pylist(), strict=True)
    ]
    return pa.array(firsts, pa.list_(pa.string()))
