"""Rank losses and Borda aggregation of LLM rankings over shuffled candidate lists."""

import numpy as np

from models.profiling.ranking import (
    borda_ranking,
    in_shown_order,
    positive_rank,
    shown_to_original,
    shuffle_candidates,
)


def test_shown_positions_map_back_to_original_columns():
    order = np.array([3, 0, 2, 1])  # shown position p holds original column order[p]
    assert shown_to_original([1, 1, 9, -1, 0], order) == [0, 3]  # duplicates and invalid indices dropped
    assert positive_rank([3, 0], num_candidates=4) == 1
    assert positive_rank([3, 2], num_candidates=4) == 4  # not listed: worse than every listed item


def test_borda_combines_permutations_and_equals_the_list_for_one():
    assert borda_ranking([[2, 0, 1]], num_candidates=5, top_k=3) == [2, 0, 1]
    # points (top_k - position): column 0 gets 2+3+3, column 2 gets 3+1, column 1 gets 1+2
    tops = [[2, 0, 1], [0, 1, 2], [0, 3]]
    assert borda_ranking(tops, num_candidates=5, top_k=3) == [0, 2, 1, 3]


def test_shuffles_are_seeded_per_round_and_permutation():
    candidates = np.zeros((3, 10), dtype=int)
    first = shuffle_candidates(candidates, seed=0, round_index=1, permutation=0)
    assert np.array_equal(first, shuffle_candidates(candidates, seed=0, round_index=1, permutation=0))
    assert not np.array_equal(first, shuffle_candidates(candidates, seed=0, round_index=1, permutation=1))
    assert all(sorted(row) == list(range(10)) for row in first.tolist())


def test_an_answer_that_counts_the_shown_positions_is_no_ranking():
    assert in_shown_order([0, 1, 2, 3]) and in_shown_order([1, 2, 3])  # as SmolLM2-135M answers
    assert not in_shown_order([1, 3, 2]) and not in_shown_order([4, 5, 6]) and not in_shown_order([2])
    assert not in_shown_order([])
