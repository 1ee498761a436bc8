"""Bootstrap intervals from per-block sums, popularity-matched candidates, CF + profile fusion."""

from __future__ import annotations

import numpy as np
import pytest

from models.cf import rank_metrics
from models.data import encode_interactions, load_dataset, sample_candidates
from models.data.sampler import popularity_matched
from models.evaluation import BootstrapSums, metrics_with_ci, poisson_weights, rank_values, user_keys
from models.profiling.fusion import fused, mean_reciprocal_rank, positive_ranks_rows, standardised
from tests.datasets import clean_dataset


def exact_bootstrap(ranks: np.ndarray, resamples: int = 2000, seed: int = 0) -> dict[str, list[float]]:
    """The classic bootstrap (users drawn with replacement), which the Poisson bootstrap approximates."""
    rng = np.random.default_rng(seed)
    samples = ranks[rng.integers(0, len(ranks), size=(resamples, len(ranks)))]
    draws: dict[str, list[float]] = {}
    for sample in samples:
        for key, value in rank_metrics(sample, (10, 20)).items():
            draws.setdefault(key, []).append(value)
    return {key: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for key, v in draws.items()}


def test_poisson_intervals_agree_with_the_exact_bootstrap_and_do_not_depend_on_the_blocks():
    ranks = np.random.default_rng(1).integers(0, 100, 400)
    streamed = metrics_with_ci(ranks, resamples=2000)
    exact = exact_bootstrap(ranks)
    for key, (low, high) in exact.items():
        assert streamed[key] == pytest.approx(rank_metrics(ranks, (10, 20))[key])
        assert streamed["ci95"][key] == pytest.approx([low, high], abs=0.01)
    keys = np.arange(len(ranks))
    whole = BootstrapSums(resamples=2000)
    whole.add(keys, rank_values(ranks))
    blocks = [BootstrapSums(resamples=2000) for _ in range(3)]
    for block, part in zip(blocks, np.array_split(np.arange(len(ranks)), 3), strict=True):
        block.add(keys[part], rank_values(ranks[part]))
    merged = BootstrapSums(resamples=2000)
    for block in reversed(blocks):
        merged.merge(block)
    assert merged.interval("recall@20") == pytest.approx(whole.interval("recall@20"))
    assert (poisson_weights(user_keys(["a", "b"]), 0) == poisson_weights(user_keys(["a", "b"]), 0)).all()
    assert poisson_weights(keys, 0).mean() == pytest.approx(1.0, abs=0.01)


def test_paired_intervals_see_a_difference_that_unpaired_ones_miss():
    rng = np.random.default_rng(2)
    base = rng.integers(0, 100, 300)
    better = np.maximum(base - 3, 0)  # every user's positive three places higher
    sums = BootstrapSums()
    keys = np.arange(len(base))
    sums.add(keys, {"a": rank_values(better)["mrr"], "b": rank_values(base)["mrr"]})
    low, high = sums.interval("a", minus="b")
    assert 0 < low < high
    separate = sums.interval("a"), sums.interval("b")
    assert separate[0][0] < separate[1][1]  # the two intervals overlap


def test_popularity_matched_negatives_come_from_the_positives_bin(tmp_path):
    dataset = load_dataset(clean_dataset(tmp_path, users=40, items=300, per_user=12))
    encoded = encode_interactions(dataset)
    uniform = sample_candidates(encoded, "test", num_negatives=20, seed=0)
    matched = popularity_matched(encoded, uniform, seed=0, bins=5)
    assert (matched.positives == uniform.positives).all() and matched.candidates.shape == (40, 21)
    train = encoded.mask(("train",))
    popularity = np.bincount(encoded.item[train], minlength=encoded.num_items)
    seen = encoded.matrix(("train", "valid", "test")).toarray() > 0
    rank = np.empty(encoded.num_items, np.int64)
    rank[np.lexsort((np.arange(encoded.num_items), -popularity))] = np.arange(encoded.num_items)
    width = -(-encoded.num_items // 5)
    for user, row in zip(matched.users, matched.candidates, strict=True):
        negatives = row[1:]
        assert len(set(negatives.tolist())) == 20 and not seen[user, negatives].any()
        assert (np.abs(rank[negatives] // width - rank[row[0]] // width) <= 1).all()
    again = popularity_matched(encoded, uniform, seed=0, bins=5)
    assert (again.candidates == matched.candidates).all()


def test_fusion_standardises_both_scores_and_its_weight_moves_the_ranking():
    cf = np.array([[1.0, 2.0, 0.0]])
    profile = np.array([[5.0, -5.0, -np.inf]])  # the third candidate could not be scored
    assert standardised(profile)[0, 2] < standardised(profile)[0, 1]
    only_cf = positive_ranks_rows(fused(cf, profile, 0.0), np.array([1]))
    with_profile = positive_ranks_rows(fused(cf, profile, 3.0), np.array([1]))
    assert only_cf.tolist() == [[1.0]] and with_profile.tolist() == [[0.0]]
    two = positive_ranks_rows(np.array([[3.0, 0.0, 1.0, 2.0]]), np.array([2]))
    assert two.tolist() == [[0.0, 2.0]] and mean_reciprocal_rank(two).tolist() == [
        pytest.approx((1 + 1 / 3) / 2)
    ]
