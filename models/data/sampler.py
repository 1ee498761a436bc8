"""Seeded 1:N candidate sets: each user's held-out positive plus negatives they never interacted with."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from models.data.encoding import EncodedInteractions
from models.errors import TailorMindError

VECTOR_ROUNDS = 8
POPULARITY_BINS = 10


@dataclass(frozen=True)
class CandidateSample:
    """``candidates[i]`` are item indices for ``users[i]``: the positive in column 0, then the negatives."""

    users: np.ndarray
    candidates: np.ndarray

    @property
    def positives(self) -> np.ndarray:
        """The held-out positive of each user."""
        return self.candidates[:, 0]


def sample_candidates(
    encoded: EncodedInteractions, split: str, *, num_negatives: int = 99, seed: int = 0, salt: str = ""
) -> CandidateSample:
    """Per user with a ``split`` positive: ``num_negatives`` distinct never-seen items, drawn uniformly."""
    users, positives = encoded.last_per_user(split, seed)
    seen = np.unique(encoded.user.astype(np.int64) * encoded.num_items + encoded.item)
    unseen_counts = (
        encoded.num_items - np.bincount(seen // encoded.num_items, minlength=encoded.num_users)[users]
    )
    short = unseen_counts < num_negatives
    if short.any():
        raise TailorMindError(
            f"{int(short.sum())} users have fewer than {num_negatives} items they never interacted with "
            f"(e.g. user {encoded.user_ids[int(users[short][0])]} has {int(unseen_counts[short][0])}); "
            "lower the number of negatives or use a larger catalogue."
        )
    rng = np.random.default_rng([seed, zlib.crc32(f"{split}/{salt}".encode())])
    negatives = np.full((len(users), num_negatives), -1, dtype=np.int64)
    todo = np.arange(len(users))
    for _ in range(VECTOR_ROUNDS):
        if not len(todo):
            break
        filled = _draw_rows(rng, users[todo], seen, encoded.num_items, num_negatives)
        complete = (filled >= 0).all(axis=1)
        negatives[todo[complete]] = filled[complete]
        todo = todo[~complete]
    # The few users who have seen most of the catalogue: draw from their explicit unseen list.
    if len(todo):
        negatives[todo] = sample_rows_uniform(
            rng, users[todo].astype(np.int64), seen, encoded.num_items, num_negatives
        )
    candidates = np.concatenate([positives[:, None].astype(np.int64), negatives], axis=1).astype(np.int32)
    return CandidateSample(users=users.astype(np.int32), candidates=candidates)


def popularity_matched(
    encoded: EncodedInteractions,
    sample: CandidateSample,
    *,
    seed: int = 0,
    bins: int = POPULARITY_BINS,
    popularity: np.ndarray | None = None,
) -> CandidateSample:
    """``sample``'s positives with never-seen negatives from each positive's popularity bin.

    Items are ranked by their number of train interactions (ties by index) and the ranks cut into ``bins``
    bins of equal size; a user's negatives come uniformly from the positive's bin, and where that bin has
    too few items the user has not seen, from a window of ranks widened by half a bin on each side per
    round (then, for the last few, from the whole catalogue). Most popular is near chance on these sets.
    """
    num_items, count = encoded.num_items, sample.candidates.shape[1] - 1
    if popularity is None:
        popularity = train_popularity(encoded)
    by_rank = np.lexsort((np.arange(num_items), -popularity))
    rank = np.empty(num_items, np.int64)
    rank[by_rank] = np.arange(num_items)
    width = -(-num_items // bins)
    low = rank[sample.positives] // width * width
    high = np.minimum(low + width, num_items)
    users = sample.users.astype(np.int64)
    seen = np.unique(
        np.r_[encoded.user.astype(np.int64) * num_items + encoded.item, users * num_items + sample.positives]
    )
    rng = np.random.default_rng([seed, zlib.crc32(b"popularity-matched")])
    negatives = np.full((len(users), count), -1, dtype=np.int64)
    todo = np.arange(len(users))
    for _ in range(2 * bins):
        if not len(todo):
            break
        filled = _draw_rows(rng, users[todo], seen, num_items, count, low[todo], high[todo], by_rank)
        complete = (filled >= 0).all(axis=1)
        negatives[todo[complete]] = filled[complete]
        todo = todo[~complete]
        low[todo], high[todo] = (
            np.maximum(low[todo] - width // 2, 0),
            np.minimum(high[todo] + width // 2, num_items),
        )
    if len(todo):
        uniform = sample_rows_uniform(rng, users[todo], seen, num_items, count)
        negatives[todo] = uniform
    candidates = np.concatenate([sample.positives[:, None].astype(np.int64), negatives], axis=1)
    return CandidateSample(users=sample.users, candidates=candidates.astype(np.int32))


def train_popularity(encoded: EncodedInteractions) -> np.ndarray:
    """Train interactions per item."""
    return np.bincount(encoded.item[encoded.mask(("train",))], minlength=encoded.num_items)


def sample_rows_uniform(
    rng: np.random.Generator, users: np.ndarray, seen: np.ndarray, num_items: int, n: int
) -> np.ndarray:
    """``n`` distinct never-seen items per user from the whole catalogue (a few users: one at a time)."""
    out = np.empty((len(users), n), np.int64)
    for row, user in enumerate(users):
        user_seen = seen[(seen >= user * num_items) & (seen < (user + 1) * num_items)] % num_items
        out[row] = rng.choice(np.setdiff1d(np.arange(num_items), user_seen), size=n, replace=False)
    return out


def _draw_rows(
    rng: np.random.Generator,
    users: np.ndarray,
    seen: np.ndarray,
    num_items: int,
    n: int,
    low: np.ndarray | None = None,
    high: np.ndarray | None = None,
    by_rank: np.ndarray | None = None,
) -> np.ndarray:
    """Up to ``n`` distinct unseen items per user (-1 where a row came up short), chosen uniformly from the
    whole catalogue, or from the ranks ``[low, high)`` of each user's row in ``by_rank``."""
    if low is None or high is None or by_rank is None:
        draws = rng.integers(0, num_items, size=(len(users), 2 * n + 8))
    else:
        spans = (high - low)[:, None]
        draws = by_rank[low[:, None] + (rng.random((len(users), 2 * n + 8)) * spans).astype(np.int64)]
    keys = users[:, None].astype(np.int64) * num_items + draws
    pos = np.searchsorted(seen, keys).clip(max=len(seen) - 1)
    draws[seen[pos] == keys] = num_items
    draws.sort(axis=1)
    draws[:, 1:][draws[:, 1:] == draws[:, :-1]] = num_items
    priority = rng.random(draws.shape)
    priority[draws == num_items] = np.inf
    pick = np.argsort(priority, axis=1)[:, :n]
    chosen = np.take_along_axis(draws, pick, axis=1)
    chosen[chosen == num_items] = -1
    return chosen
