"""Seeded 1:N candidate sets: each user's held-out positive plus negatives they never interacted with."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from models.data.encoding import EncodedInteractions
from models.errors import TailorMindError

VECTOR_ROUNDS = 8


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
    users, positives = encoded.last_per_user(split)
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
    for row in todo:
        user_seen = seen[
            (seen >= users[row] * encoded.num_items) & (seen < (users[row] + 1) * encoded.num_items)
        ]
        unseen = np.setdiff1d(np.arange(encoded.num_items), user_seen % encoded.num_items)
        negatives[row] = rng.choice(unseen, size=num_negatives, replace=False)
    candidates = np.concatenate([positives[:, None].astype(np.int64), negatives], axis=1).astype(np.int32)
    return CandidateSample(users=users.astype(np.int32), candidates=candidates)


def _draw_rows(
    rng: np.random.Generator, users: np.ndarray, seen: np.ndarray, num_items: int, n: int
) -> np.ndarray:
    """Up to ``n`` distinct unseen items per user (-1 where a row came up short), chosen uniformly."""
    draws = rng.integers(0, num_items, size=(len(users), 2 * n + 8))
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
