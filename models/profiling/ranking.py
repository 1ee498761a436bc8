"""Candidate shuffling and rank losses for LLM ranking of 1:99 candidate sets."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np


def shuffle_candidates(
    candidates: np.ndarray, seed: int, round_index: int, permutation: int = 0
) -> np.ndarray:
    """Per-row permutations [U, C] (seeded by round and permutation) so position carries no signal."""
    rng = np.random.default_rng([seed, round_index, permutation])
    return np.argsort(rng.random(candidates.shape), axis=1)


def shown_to_original(top: list[int], order: np.ndarray) -> list[int]:
    """The original columns of the ranker's ``top`` shown positions; duplicates and invalid ones dropped."""
    seen: list[int] = []
    for position in top:
        if 0 <= position < len(order) and position not in seen:
            seen.append(position)
    return [int(order[p]) for p in seen]


def borda_ranking(tops: list[list[int]], num_candidates: int, top_k: int) -> list[int]:
    """Original columns by Borda count over permutations (``top_k - position`` points per list), best first.

    With one list this is that list; ties keep the order of first appearance.
    """
    points = np.zeros(num_candidates)
    first_seen: dict[int, int] = {}
    for top in tops:
        for position, column in enumerate(top[:top_k]):
            points[column] += top_k - position
            first_seen.setdefault(column, len(first_seen))
    return sorted(first_seen, key=lambda column: (-points[column], first_seen[column]))


def positive_rank(ranking: list[int], num_candidates: int) -> int:
    """0-based rank of the positive (original column 0); ``num_candidates`` when it is not listed."""
    return ranking.index(0) if 0 in ranking else num_candidates


def listed_positive_ranks(ranked: list[int], positives: int, negatives: int) -> list[int]:
    """0-based rank among the negatives of each positive column (columns below ``positives``) in a listwise
    ranking: its place in the list less the positives above it; ``negatives`` when it is not listed."""
    ranks = []
    for column in range(positives):
        if column in ranked:
            place = ranked.index(column)
            ranks.append(place - sum(1 for c in ranked[:place] if c < positives))
        else:
            ranks.append(negatives)
    return ranks


def in_shown_order(top: Sequence[int]) -> bool:
    """Whether a ranker's answer lists consecutive shown positions from the first: the order shown, not a
    ranking (small models count instead of ranking)."""
    return len(top) > 1 and top[0] <= 1 and all(b == a + 1 for a, b in pairwise(top))
