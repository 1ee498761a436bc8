"""Hypergraph CF library: graph, propagation, BPR sampling, top-k, ranking metrics, a short training run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from models.cf import (
    HypergraphCF,
    bpr_loss,
    build_hypergraph,
    full_ranking_metrics,
    full_ranking_per_user,
    full_ranking_sums,
    popularity_embeddings,
    popularity_scores,
    rank_metrics,
    sample_bpr_triples,
    sampled_ranks,
    sampled_softmax_loss,
    seen_keys,
    topk_unseen,
)
from models.cf.trainer import CFTrainer, cf_model
from models.config import CFConfig

# 3 users x 5 items; user 2 has no train items and item 4 has neither users nor tags (zero degree).
TRAIN_PAIRS = [(0, 0), (0, 1), (1, 1), (1, 2), (1, 3)]
# item-tag pairs over 2 tags, with one duplicate
ITEM_TAG = ([0, 1, 1, 3, 0], [0, 0, 1, 1, 0])


def _tiny_train() -> sp.csr_matrix:
    """TRAIN_PAIRS as CSR with a duplicated stored entry, a value of 2 and an explicit stored zero."""
    rows = [0, 0, 0, 1, 1, 1, 2]
    cols = [0, 1, 1, 1, 2, 3, 4]
    data = [1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    indptr = np.array([0, 3, 6, 7])
    matrix = sp.csr_matrix((np.array(data, np.float32), np.array(cols), indptr), shape=(3, 5))
    assert matrix.nnz == len(rows)  # the duplicate and the zero really are stored
    return matrix


def _dense_adjacency(use_tags: bool) -> np.ndarray:
    """A = [[0, X'], [X'ᵀ, 0]] with X' = [X; Yᵀ] written out by hand from the pair lists."""
    num_tags = 2 if use_tags else 0
    x_prime = np.zeros((3 + num_tags, 5))
    for u, i in TRAIN_PAIRS:
        x_prime[u, i] = 1.0
    if use_tags:
        for i, t in zip(*ITEM_TAG, strict=True):
            x_prime[3 + t, i] = 1.0
    rows = x_prime.shape[0]
    adj = np.zeros((rows + 5, rows + 5))
    adj[:rows, rows:] = x_prime
    adj[rows:, :rows] = x_prime.T
    return adj


def _normalise(adj: np.ndarray) -> np.ndarray:
    """D^-1/2 A D^-1/2 with zero-degree rows and columns left at zero."""
    deg = adj.sum(axis=1)
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0)
    return inv[:, None] * adj * inv[None, :]


def _as_dense(graph) -> np.ndarray:
    out = np.zeros((graph.num_nodes, graph.num_nodes))
    src, dst = graph.edge_index.numpy()
    np.add.at(out, (src, dst), graph.edge_weight.numpy())
    return out


@pytest.mark.parametrize("use_tags", [True, False])
def test_graph_layout_symmetry_and_normalisation(use_tags):
    graph = build_hypergraph(_tiny_train(), np.array(ITEM_TAG[0]), np.array(ITEM_TAG[1]), 2, use_tags)
    num_tags = 2 if use_tags else 0
    assert (graph.num_users, graph.num_tags, graph.num_items) == (3, num_tags, 5)
    assert graph.num_nodes == 8 + num_tags
    unique_edges = len(TRAIN_PAIRS) + (4 if use_tags else 0)
    assert graph.edge_index.dtype == torch.int64 and graph.edge_weight.dtype == torch.float32
    assert graph.edge_index.shape == (2, 2 * unique_edges) and graph.edge_weight.shape == (2 * unique_edges,)
    pairs = set(map(tuple, graph.edge_index.T.tolist()))
    assert len(pairs) == 2 * unique_edges and pairs == {(j, i) for i, j in pairs}
    # user 0 - item 1 and (with tags) tag 1 - item 3 by the users, tags, items numbering
    assert (0, 3 + num_tags + 1) in pairs
    assert ((3 + 1, 3 + num_tags + 3) in pairs) == use_tags
    expected = _normalise(_dense_adjacency(use_tags))
    np.testing.assert_allclose(_as_dense(graph), expected, rtol=1e-6)
    assert np.isfinite(graph.edge_weight.numpy()).all()
    moved = graph.to("cpu")
    assert torch.equal(moved.edge_index, graph.edge_index) and moved.num_nodes == graph.num_nodes


def test_graph_rejects_out_of_range_tags():
    with pytest.raises(ValueError, match="tag_index"):
        build_hypergraph(_tiny_train(), np.array([0]), np.array([2]), 2)


@pytest.mark.parametrize("use_tags", [True, False])
def test_propagation_matches_dense_layer_mean(use_tags):
    graph = build_hypergraph(_tiny_train(), np.array(ITEM_TAG[0]), np.array(ITEM_TAG[1]), 2, use_tags)
    torch.manual_seed(0)
    model = HypergraphCF(3, graph.num_tags, 5, dim=4, layers=3)
    e0 = model.initial().detach().double().numpy()
    norm = _normalise(_dense_adjacency(use_tags))
    layers, x = [e0], e0
    for _ in range(3):
        x = norm @ x
        layers.append(x)
    expected = np.mean(layers, axis=0)
    nodes = model.propagate(graph)
    assert nodes.shape == (graph.num_nodes, 4)
    np.testing.assert_allclose(nodes.detach().double().numpy(), expected, atol=1e-6)
    users, items = model(graph)
    split_users, split_tags, split_items = model.split(nodes)
    assert split_tags.shape == (graph.num_tags, 4)
    assert torch.equal(users, split_users) and torch.equal(items, split_items)
    np.testing.assert_allclose(items.detach().numpy(), expected[-5:], atol=1e-6)
    # the zero-degree item keeps a mean of (layer 0, zeros...)
    np.testing.assert_allclose(items[4].detach().numpy(), e0[-1] / 4, atol=1e-6)


def test_model_init_and_graph_mismatch():
    torch.manual_seed(0)
    model = HypergraphCF(300, 20, 400, dim=64)
    std = model.initial().detach().std().item()
    assert abs(std - 0.1) < 0.005
    graph = build_hypergraph(_tiny_train(), np.array(ITEM_TAG[0]), np.array(ITEM_TAG[1]), 2)
    with pytest.raises(ValueError, match="users, tags, items"):
        model.propagate(graph)


def test_bpr_loss_formula_and_empty_batch():
    g = torch.Generator().manual_seed(1)
    u, p, n, u0, p0, n0 = (torch.randn(6, 3, generator=g, requires_grad=True) for _ in range(6))
    loss = bpr_loss(u, p, n, u0, p0, n0, l2=0.1)
    margin = (u * p).sum(1) - (u * n).sum(1)
    expected = (
        torch.log1p(torch.exp(-margin)).mean()
        + 0.1 * (u0.pow(2).sum() + p0.pow(2).sum() + n0.pow(2).sum()) / 2 / 6
    )
    assert torch.allclose(loss, expected)
    loss.backward()
    assert u0.grad is not None and torch.allclose(u0.grad, 0.1 * u0.detach() / 6)
    empty = torch.zeros(0, 3, requires_grad=True)
    zero = bpr_loss(empty, empty, empty, empty, empty, empty, l2=0.1)
    assert zero.item() == 0.0
    zero.backward()


def test_sampled_softmax_loss_formula_mask_and_empty_batch():
    g = torch.Generator().manual_seed(2)
    u, p, u0, p0 = (torch.randn(4, 3, generator=g, requires_grad=True) for _ in range(4))
    n = torch.randn(5, 3, generator=g, requires_grad=True)
    positives, negatives = torch.tensor([0, 1, 2, 3]), torch.tensor([9, 1, 8, 7, 6])
    loss = sampled_softmax_loss(u, p, n, positives, negatives, u0, p0, temperature=0.5, l2=0.1)
    logits = torch.cat([(u * p).sum(1, keepdim=True), u @ n.T], dim=1) / 0.5
    logits[1, 2] = -math.inf  # user 1's positive (item 1) is also shared negative 1: not a negative for it
    expected = (
        -torch.log_softmax(logits, dim=1)[:, 0].mean() + 0.1 * (u0.pow(2).sum() + p0.pow(2).sum()) / 2 / 4
    )
    assert torch.allclose(loss, expected)
    ours = torch.autograd.grad(loss, (u, p, n, u0, p0), retain_graph=True)
    theirs = torch.autograd.grad(expected, (u, p, n, u0, p0))  # the in-place backward matches autograd's
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(ours, theirs, strict=True))
    assert ours[2][1].abs().sum() > 0  # item 1 is still a negative for the others
    empty = torch.zeros(0, 3, requires_grad=True)
    none = torch.zeros(0, dtype=torch.int64)
    zero = sampled_softmax_loss(empty, empty, n, none, negatives, empty, empty, temperature=1.0, l2=0.1)
    assert zero.item() == 0.0
    zero.backward()


def _random_pairs(seed: int, num_users: int, num_items: int, per_user: int):
    rng = np.random.default_rng(seed)
    items = np.stack([rng.choice(num_items, per_user, replace=False) for _ in range(num_users)]).ravel()
    users = np.repeat(np.arange(num_users), per_user)
    return torch.as_tensor(users, dtype=torch.int64), torch.as_tensor(items, dtype=torch.int64)


def test_seen_keys_sorted_unique():
    keys = seen_keys(np.array([2, 0, 2, 1]), np.array([1, 3, 1, 0]), 4)
    assert keys.dtype == torch.int64 and keys.tolist() == [3, 4, 9]


def test_sampler_never_returns_seen_and_is_deterministic():
    num_items = 40
    users, items = _random_pairs(0, 50, num_items, 10)
    # the sampler sees every known interaction, but is given only a shard of the positives
    keys = seen_keys(users, items, num_items)
    shard = slice(0, 400)
    u, pos, neg = sample_bpr_triples(
        users[shard], items[shard], num_items, keys, torch.Generator().manual_seed(3)
    )
    seen = set(keys.tolist())
    assert len(u) == 400  # 8 rounds at a 1/4 rejection rate: all resolved
    assert not any(k in seen for k in (u * num_items + neg).tolist())
    assert ((neg >= 0) & (neg < num_items)).all() and not (neg == pos).any()
    assert set((u * num_items + pos).tolist()) <= seen
    again = sample_bpr_triples(users[shard], items[shard], num_items, keys, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip((u, pos, neg), again, strict=True))
    other = sample_bpr_triples(users[shard], items[shard], num_items, keys, torch.Generator().manual_seed(4))
    assert not torch.equal(other[2][:100], neg[:100])
    assert u.device == users.device


def test_sampler_drops_users_without_unseen_items():
    users = torch.tensor([0, 0, 0, 1])
    items = torch.tensor([0, 1, 2, 0])
    keys = seen_keys(users, items, 3)
    u, pos, neg = sample_bpr_triples(users, items, 3, keys, torch.Generator().manual_seed(0), rounds=50)
    # user 0 has seen every item: dropped; user 1 must get item 1 or 2
    assert u.tolist() == [1] and pos.tolist() == [0] and neg.item() in (1, 2)


def test_topk_unseen_matches_bruteforce():
    rng = np.random.default_rng(7)
    user_emb, item_emb = rng.standard_normal((9, 6)), rng.standard_normal((40, 6))
    mask = rng.random((9, 40)) < 0.3
    mask[8, :] = True
    mask[8, [3, 17]] = False  # only two unseen items left
    k = 5
    scores, index = topk_unseen(
        torch.as_tensor(user_emb, dtype=torch.float32),
        torch.as_tensor(item_emb, dtype=torch.float32),
        sp.csr_matrix(mask.astype(np.float32)),
        k,
    )
    assert scores.shape == (9, k) and index.shape == (9, k)
    assert scores.dtype == torch.float32 and index.dtype == torch.int64
    reference = user_emb @ item_emb.T
    reference[mask] = -np.inf
    order = np.argsort(-reference, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(reference, order, axis=1)
    np.testing.assert_allclose(scores.numpy(), top, rtol=1e-5, atol=1e-5)
    finite = np.isfinite(top)
    np.testing.assert_array_equal(index.numpy()[finite], order[finite])
    assert finite[8].tolist() == [True, True, False, False, False]
    assert not mask[np.repeat(np.arange(9), k)[finite.ravel()], index.numpy()[finite]].any()


def test_topk_unseen_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        topk_unseen(torch.ones(2, 3), torch.ones(4, 3), sp.csr_matrix((3, 4)), 2)


def test_rank_metrics_from_ranks():
    out = rank_metrics(np.array([0, 1, 4, 30]), ks=(1, 5), prefix="x_")
    assert list(out) == ["x_recall@1", "x_ndcg@1", "x_recall@5", "x_ndcg@5"]
    assert out["x_recall@1"] == pytest.approx(0.25) and out["x_ndcg@1"] == pytest.approx(0.25)
    assert out["x_recall@5"] == pytest.approx(0.75)
    assert out["x_ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4)


def _positives(num_users: int, num_items: int, users, items) -> sp.csr_matrix:
    """users x items held-out matrix with a 1 at each (user, item)."""
    data = np.ones(len(users), np.float32)
    return sp.csr_matrix((data, (np.asarray(users), np.asarray(items))), shape=(num_users, num_items))


def test_full_ranking_metrics_known_ranks():
    # item i scores 10 - i for every user, except items 6 and 7 which tie at 4.
    item_scores = 10.0 - np.arange(10)
    item_scores[7] = item_scores[6]
    item_emb = torch.as_tensor(item_scores, dtype=torch.float32)[:, None]
    user_emb = torch.ones(5, 1)
    train = np.zeros((5, 10), np.float32)
    train[0, [0, 1]] = 1  # user 0: positive 4, items 2 and 3 above it -> rank 2
    train[2, 0] = 1  # user 2: positive 9, items 1..8 above it -> rank 8
    train[3, [5, 7]] = 1  # user 3: positive 6, 0..4 above, tie with 7 excluded as seen -> rank 5
    train[4, 6] = 1  # user 4: positive 7 ties with 6, but 6 is seen -> 0..5 above -> rank 6
    # user 1: positive 0 -> rank 0
    held = _positives(5, 10, [2, 0, 1, 3, 4], [9, 4, 0, 6, 7])
    expected = rank_metrics(np.array([8, 2, 0, 5, 6]), (1, 3, 10))
    got = full_ranking_metrics(user_emb, item_emb, sp.csr_matrix(train), held, (1, 3, 10), 4)
    assert got == pytest.approx(expected)
    assert got["recall@3"] == pytest.approx(2 / 5)
    # pessimistic ties: an unseen tying item counts above the positive
    tie = full_ranking_metrics(user_emb, item_emb, sp.csr_matrix((5, 10)), _positives(5, 10, [1], [7]), (7,))
    assert tie["recall@7"] == 0.0
    default = full_ranking_metrics(user_emb, item_emb, sp.csr_matrix(train), held)
    assert set(default) == {"recall@10", "ndcg@10", "recall@20", "ndcg@20"}
    # a positive the user also has in train is ranked among the unseen items rather than excluded
    seen_pos = full_ranking_metrics(
        user_emb, item_emb, sp.csr_matrix(train), _positives(5, 10, [0], [1]), (1, 2)
    )
    assert seen_pos["recall@1"] == 1.0


def test_full_ranking_metrics_count_every_positive_of_a_user():
    """LightGCN's protocol by hand: items score 10 - i; user 0 has 3 positives, user 1 one."""
    item_emb = torch.as_tensor(10.0 - np.arange(10), dtype=torch.float32)[:, None]
    user_emb = torch.ones(2, 1)
    train = np.zeros((2, 10), np.float32)
    train[0, 0] = 1  # user 0 ranks items 1, 2, 3, ... at positions 0, 1, 2, ...
    held = _positives(2, 10, [0, 0, 0, 1], [1, 3, 8, 5])  # user 0: positions 0, 2, 7; user 1: position 5
    got = full_ranking_metrics(user_emb, item_emb, sp.csr_matrix(train), held, (3, 10))
    dcg0_3 = 1 + 1 / math.log2(4)
    idcg_3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert got["recall@3"] == pytest.approx((2 / 3 + 0) / 2)
    assert got["ndcg@3"] == pytest.approx((dcg0_3 / idcg_3 + 0) / 2)
    dcg0_10 = dcg0_3 + 1 / math.log2(9)
    assert got["recall@10"] == pytest.approx((1 + 1) / 2)
    assert got["ndcg@10"] == pytest.approx((dcg0_10 / idcg_3 + 1 / math.log2(7)) / 2)
    # blocks of one user sum to the same per-user values
    users, per_user = full_ranking_per_user(
        user_emb, item_emb, sp.csr_matrix(train), held, (3,), block_size=1
    )
    assert users.tolist() == [0, 1] and per_user["recall@3"].tolist() == pytest.approx([2 / 3, 0])
    sums = full_ranking_sums(user_emb, item_emb, sp.csr_matrix(train), held, (3,), rows=np.array([1]))
    assert sums == {"recall@3": 0.0, "ndcg@3": 0.0, "users": 1.0}


def test_sampled_ranks_known_ranks():
    user_emb = torch.tensor([[1.0], [-1.0]])
    item_emb = torch.arange(10, dtype=torch.float32)[:, None]
    candidates = np.array([[5, 1, 7, 9, 2], [5, 1, 7, 9, 5]])
    # user 0: 7 and 9 beat 5 -> rank 2; user 1 scores -i: -1 beats -5, the duplicate 5 ties -> rank 2
    assert sampled_ranks(user_emb, item_emb, np.array([0, 1]), candidates).tolist() == [2, 2]
    got = rank_metrics(np.array([2, 2]), (2, 3), prefix="sampled_")
    assert got["sampled_recall@2"] == 0.0 and got["sampled_recall@3"] == 1.0
    assert got["sampled_ndcg@3"] == pytest.approx(0.5)
    # user 1 on row 0: -1 and -2 beat -5 -> rank 2; user 0 on row 1: 7, 9 and the tying 5 -> rank 3
    assert sampled_ranks(user_emb, item_emb, np.array([1, 0]), candidates).tolist() == [2, 3]
    assert set(rank_metrics(np.array([0]), (10, 20), prefix="sampled_")) == {
        "sampled_recall@10",
        "sampled_ndcg@10",
        "sampled_recall@20",
        "sampled_ndcg@20",
    }


def test_popularity_scores_count_distinct_users():
    counts = popularity_scores(_tiny_train())
    assert counts.tolist() == [1, 2, 1, 1, 0]
    user_emb, item_emb = popularity_embeddings(_tiny_train())
    assert user_emb.shape == (3, 1)
    assert np.array_equal(np.floor(item_emb[:, 0].numpy()), [1.0, 2.0, 1.0, 1.0, 0.0])  # counts + jitter < 1


def _two_cluster_data(seed: int, num_users: int = 200, num_items: int = 100, per_user: int = 20):
    """Users 0..99 like items 0..49, users 100..199 items 50..99, Zipf popularity inside each cluster."""
    rng = np.random.default_rng(seed)
    half = num_items // 2
    weights = 1.0 / np.arange(1, half + 1)
    keys = rng.random((num_users, half)) ** (1.0 / weights)  # weighted sampling without replacement
    picked = (
        np.argsort(-keys, axis=1)[:, :per_user] + half * (np.arange(num_users) >= num_users // 2)[:, None]
    )
    users = np.repeat(np.arange(num_users), per_user)
    items = picked.ravel()
    held_out = np.arange(num_users) * per_user + rng.integers(0, per_user, num_users)
    train_rows = np.setdiff1d(np.arange(len(users)), held_out)
    train = sp.csr_matrix(
        (np.ones(len(train_rows), np.float32), (users[train_rows], items[train_rows])),
        shape=(num_users, num_items),
    )
    # tag 0/1: the cluster; tags 2/3 random noise
    item_index = np.r_[np.arange(num_items), np.arange(num_items)]
    tag_index = np.r_[np.arange(num_items) // half, 2 + rng.integers(0, 2, num_items)]
    return train, users[held_out], items[held_out], item_index, tag_index


@pytest.mark.parametrize(
    ("use_tags", "loss", "bpr_negatives"),
    [(True, "bpr", 1), (False, "bpr", 1), (True, "bpr", 4), (True, "softmax", 1)],
)
def test_short_training_beats_most_popular(use_tags, loss, bpr_negatives):
    train, eval_users, eval_items, item_index, tag_index = _two_cluster_data(0)
    graph = build_hypergraph(train, item_index, tag_index, 4, use_tags=use_tags)
    cf = CFConfig(
        dim=32, layers=2, lr=0.01, batch_size=train.nnz, loss=loss, negatives=64, bpr_negatives=bpr_negatives
    )
    torch.manual_seed(0)
    model = cf_model(graph, cf)
    trainer = CFTrainer(model, graph, train, cf)
    losses = [trainer.train_steps(1)["loss"] for _ in range(300)]  # one step per epoch
    floor = {"bpr": 0.5, "softmax": 0.9}[loss]  # a softmax over a cluster's many equal items stays high
    assert np.mean(losses[-20:]) < floor * np.mean(losses[:20])
    with torch.no_grad():
        user_emb, item_emb = model(graph)
    held = _positives(*train.shape, eval_users, eval_items)
    trained = full_ranking_metrics(user_emb, item_emb, train, held)
    pop_users, pop_items = popularity_embeddings(train)
    popular = full_ranking_metrics(pop_users, pop_items, train, held)
    assert trained["recall@10"] > popular["recall@10"] + 0.2, (trained, popular)
    assert trained["ndcg@10"] > popular["ndcg@10"]


@pytest.mark.parametrize("bpr_negatives", [1, 4])
def test_bpr_negatives_add_terms_not_steps(bpr_negatives):
    train, _, _, item_index, tag_index = _two_cluster_data(0)
    graph = build_hypergraph(train, item_index, tag_index, 4)
    cf = CFConfig(dim=8, layers=1, batch_size=-(-train.nnz // 3), bpr_negatives=bpr_negatives, loss="bpr")
    trainer = CFTrainer(cf_model(graph, cf), graph, train, cf)
    steps = []
    step = trainer.optimizer.step
    trainer.optimizer.step = lambda: steps.append(step())  # type: ignore[method-assign]
    metrics = trainer.train_steps(trainer.steps_per_epoch)
    assert len(steps) == 3 and trainer.position() == {"epoch": 2, "step_in_epoch": 0, "steps": 3}
    assert metrics["pairs_per_second"] * metrics["seconds"] == pytest.approx(train.nnz, rel=0.01)


def test_a_resumed_trainer_takes_the_same_steps():
    train, _, _, item_index, tag_index = _two_cluster_data(0)
    graph = build_hypergraph(train, item_index, tag_index, 4)
    cf = CFConfig(dim=8, layers=1, batch_size=-(-train.nnz // 3))
    torch.manual_seed(0)
    straight = CFTrainer(cf_model(graph, cf), graph, train, cf)
    straight.train_steps(5)
    torch.manual_seed(0)
    first = CFTrainer(cf_model(graph, cf), graph, train, cf)
    first.train_steps(2)
    second = CFTrainer(cf_model(graph, cf), graph, train, cf)
    second.core.load_state_dict(first.core.state_dict())
    second.optimizer.load_state_dict(first.optimizer.state_dict())
    second.seek(first.position())
    second.train_steps(3)
    for a, b in zip(straight.core.state_dict().values(), second.core.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
