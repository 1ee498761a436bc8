"""The profiled users, their evidence items and their 1:99 candidate sets, as index arrays."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.data import EncodedInteractions, sample_candidates
from models.data.hashing import id_hashes
from models.data.sampler import CandidateSample, popularity_matched

MIN_TRAIN_KEPT = 3  # extra validation positives are taken only from users who keep this many train items


@dataclass(frozen=True)
class Cohort:
    """Sampled users (those with valid and test positives) with their history and candidates."""

    users: np.ndarray  # user indices, sorted
    history: list[np.ndarray]  # per user: train item indices, most recent first, truncated
    valid_candidates: list[np.ndarray]  # per user: the validation positives, then the negatives
    valid_positives: np.ndarray  # per user: how many of their validation candidates are positives
    test_candidates: np.ndarray  # [U, 1 + negatives], positive in column 0
    test_candidates_popular: np.ndarray | None = None  # [U, 1 + negatives], popularity-matched negatives

    def items(self) -> np.ndarray:
        """Every item index any part of the cohort refers to."""
        parts = [*self.history, *self.valid_candidates, self.test_candidates.ravel()]
        if self.test_candidates_popular is not None:
            parts.append(self.test_candidates_popular.ravel())
        return np.unique(np.concatenate(parts)) if parts else np.array([], dtype=np.int64)


@dataclass(frozen=True)
class UserSample:
    """A seeded sample of at most ``size`` users (None: all) by a draw fixed by each user's id alone: the
    ``size`` lowest draws. Over parts of the data, ``limit`` (the ``size``-th lowest draw of all, from each
    part's ``lowest``) makes each part keep exactly its users of the whole sample."""

    size: int | None
    seed: int
    salt: str
    limit: int | None = None

    def draws(self, user_ids: pa.Array) -> np.ndarray:
        """Each user's draw (uint64, the same in every part)."""
        return id_hashes(user_ids, f"{self.salt}{self.seed}")

    def lowest(self, user_ids: pa.Array, users: np.ndarray) -> np.ndarray:
        """The lowest ``size`` draws of ``users`` (indices into ``user_ids``), sorted; none without a size
        (every user is in the sample)."""
        if self.size is None:
            return np.array([], np.uint64)
        return np.sort(self.draws(user_ids.take(pa.array(users, pa.int64()))))[: self.size]

    def select(self, user_ids: pa.Array, users: np.ndarray) -> np.ndarray:
        """The sampled ones of ``users`` (sorted indices into ``user_ids``)."""
        if self.size is None:
            return users
        draws = self.draws(user_ids.take(pa.array(users, pa.int64())))
        if self.limit is not None:
            return users[draws <= np.uint64(self.limit)]
        return np.sort(users[np.argsort(draws, kind="stable")[: self.size]])

    def limited(self, lowest: list[np.ndarray]) -> UserSample:
        """This sample over parts whose ``lowest`` draws are given."""
        if self.size is None:
            return self
        draws = np.sort(np.concatenate(lowest)) if lowest else np.array([], np.uint64)
        limit = int(draws[self.size - 1]) if len(draws) >= self.size else int(np.iinfo(np.uint64).max)
        return replace(self, limit=limit)


def profilable_users(encoded: EncodedInteractions) -> np.ndarray:
    """Users with a validation and a test item (sorted indices): who can be profiled and evaluated."""
    return np.intersect1d(encoded.user[encoded.mask(("valid",))], encoded.user[encoded.mask(("test",))])


def few_interaction_users(encoded: EncodedInteractions, min_history: int) -> np.ndarray:
    """Users with fewer than ``min_history`` interactions (sorted indices): the cold-start ones."""
    counts = np.bincount(encoded.user, minlength=encoded.num_users)
    return np.flatnonzero((counts > 0) & (counts < min_history))


def select_cohort(
    encoded: EncodedInteractions,
    sample: UserSample,
    history_items: int,
    num_negatives: int = 99,
    valid_positives: int = 1,
    popularity_matched_test: bool = False,
    popularity: np.ndarray | None = None,
) -> Cohort:
    """``sample`` of the users with held-out items, their recent history and their candidate sets.

    Each user's validation positives are the held-out validation item and, for users who keep at least
    ``MIN_TRAIN_KEPT`` train items, up to ``valid_positives - 1`` of their latest train items, which then
    leave the history (the profile's evidence). ``popularity`` (train interactions per item, over all the
    data) bins the popularity-matched negatives; by default it is counted from ``encoded``.
    """
    seed = sample.seed
    valid = sample_candidates(encoded, "valid", num_negatives=num_negatives, seed=seed, salt="profiling")
    test = sample_candidates(encoded, "test", num_negatives=num_negatives, seed=seed, salt="profiling")
    eligible = sample.select(encoded.user_ids, np.intersect1d(valid.users, test.users))
    train = encoded.mask(("train",))
    train_counts = np.bincount(encoded.user[train], minlength=encoded.num_users)[eligible]
    extra = np.clip(train_counts - MIN_TRAIN_KEPT, 0, valid_positives - 1)
    recent = recent_items(encoded, eligible, train, history_items + valid_positives - 1)
    valid_rows = valid.candidates[np.searchsorted(valid.users, eligible)]
    test_sample = CandidateSample(eligible, test.candidates[np.searchsorted(test.users, eligible)])
    return Cohort(
        users=eligible,
        history=[items[k : k + history_items] for items, k in zip(recent, extra, strict=True)],
        valid_candidates=[
            np.r_[row[:1], items[:k], row[1:]]
            for row, items, k in zip(valid_rows, recent, extra, strict=True)
        ],
        valid_positives=1 + extra,
        test_candidates=test_sample.candidates,
        test_candidates_popular=(
            popularity_matched(encoded, test_sample, seed=seed, popularity=popularity).candidates
            if popularity_matched_test
            else None
        ),
    )


def recent_items(
    encoded: EncodedInteractions, users: np.ndarray, rows: np.ndarray, limit: int
) -> list[np.ndarray]:
    """Per user (sorted indices): their items among the ``rows`` mask, most recent first, up to ``limit``."""
    order = np.lexsort((-encoded.timestamp[rows], encoded.user[rows]))
    users_sorted, items_sorted = encoded.user[rows][order], encoded.item[rows][order]
    starts = np.searchsorted(users_sorted, users)
    ends = np.searchsorted(users_sorted, users, side="right")
    return [items_sorted[s : min(e, s + limit)] for s, e in zip(starts, ends, strict=True)]


def select_cold_start(
    encoded: EncodedInteractions, profiled: np.ndarray, min_history: int, sample: UserSample
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``sample`` of the users with fewer than ``min_history`` interactions, less any in ``profiled``
    (fewer than the sample's size then), and their items, most recent first."""
    cold = np.setdiff1d(
        sample.select(encoded.user_ids, few_interaction_users(encoded, min_history)), profiled
    )
    everything = np.ones(len(encoded.user), dtype=bool)
    return cold, recent_items(encoded, cold, everything, min_history)


def item_id_lists(encoded: EncodedInteractions, rows: list[np.ndarray]) -> pa.Array:
    """Lists of item indices as lists of item ids."""
    offsets = np.r_[0, np.cumsum([len(r) for r in rows])].astype(np.int32)
    flat = np.concatenate(rows).astype(np.int64) if rows else np.array([], dtype=np.int64)
    return pa.ListArray.from_arrays(pa.array(offsets), encoded.item_ids.take(pa.array(flat)))


def cohort_table(
    encoded: EncodedInteractions, cohort: Cohort, topk: pa.Table | None, cf_items: int
) -> pa.Table:
    """One row per profiled user, by item id: history (most recent first), CF items, seen items, candidates.

    ``seen_items`` (every item the user interacted with, any split) lets validation negatives be redrawn.
    """
    user_ids = encoded.user_ids.take(pa.array(cohort.users, pa.int64()))

    seen_matrix = encoded.matrix(("train", "valid", "test"))
    seen = [seen_matrix.indices[seen_matrix.indptr[u] : seen_matrix.indptr[u + 1]] for u in cohort.users]
    popular = cohort.test_candidates_popular
    return pa.table(
        {
            "user_id": user_ids,
            "history": item_id_lists(encoded, cohort.history),
            "cf_items": cf_recommendations(topk, user_ids, cf_items),
            "seen_items": item_id_lists(encoded, seen),
            "valid_candidates": item_id_lists(encoded, cohort.valid_candidates),
            "valid_positives": pa.array(cohort.valid_positives, pa.int64()),
            "test_candidates": item_id_lists(encoded, list(cohort.test_candidates)),
            "test_candidates_popular": (
                item_id_lists(encoded, list(popular))
                if popular is not None
                else pa.array([[] for _ in range(len(user_ids))], pa.list_(pa.string()))
            ),
            "swap_user": swap_partners(user_ids),
        }
    )


def swap_partners(user_ids: pa.Array) -> pa.Array:
    """A fixed derangement of the cohort: each user reads the next user's profile (by id) in the
    swapped-profile control; a cohort of one has no partner (null)."""
    if len(user_ids) < 2:
        return pa.array([None] * len(user_ids), pa.string())
    order = np.argsort(np.asarray(user_ids.to_pylist(), dtype=object))
    partner = np.empty(len(order), np.int64)
    partner[order] = np.roll(order, -1)
    return user_ids.take(pa.array(partner))


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
