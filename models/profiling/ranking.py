"""Candidate shuffling and rank losses for LLM ranking of 1:99 candidate sets."""

from __future__ import annotations

import numpy as np


def shuffle_candidates(candidates: np.ndarray, seed: int, round_index: int) -> np.ndarray:
    """Per-row permutations [U, C] (seeded by round) so the positive's position carries no signal."""
    rng = np.random.default_rng([seed, round_index])
    return np.argsort(rng.random(candidates.shape), axis=1)


def positive_rank(top: list[int], order: np.ndarray, num_candidates: int) -> int:
    """0-based rank of the positive (original column 0) in the ranker's ``top`` list of shown positions.

    Shown position ``p`` holds original column ``order[p]``; duplicates and out-of-range indices are
    ignored; a positive outside the list ranks ``num_candidates`` (worse than every listed item).
    """
    seen: list[int] = []
    for position in top:
        if 0 <= position < len(order) and position not in seen:
            seen.append(position)
    original = [int(order[p]) for p in seen]
    return original.index(0) if 0 in original else num_candidates
