"""Top-k recommendation and leave-one-out ranking metrics (full catalogue and sampled 1:99)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch


def topk_unseen(
    user_emb: torch.Tensor, item_emb: torch.Tensor, seen: sp.csr_matrix, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores [B, k] float32, items [B, k] int64): each row's best items outside its ``seen`` row.

    Row b of ``seen`` ([B, num_items]) lists the items to exclude for ``user_emb[b]``. A user with fewer
    than ``k`` unseen items gets ``-inf`` scores (and arbitrary excluded items) in the tail of the row.
    """
    num_items = item_emb.shape[0]
    if seen.shape != (user_emb.shape[0], num_items):
        raise ValueError(f"seen has shape {seen.shape}, expected {(user_emb.shape[0], num_items)}")
    if not 0 <= k <= num_items:
        raise ValueError(f"k={k} must be between 0 and the number of items ({num_items})")
    with torch.no_grad():
        scores = _scores(user_emb, item_emb)
        _exclude(scores, sp.csr_matrix(seen))
        top, index = torch.topk(scores, k, dim=1)
    return top, index


def full_ranks(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    train: sp.csr_matrix,
    eval_users: np.ndarray,
    eval_items: np.ndarray,
    block_size: int = 4096,
) -> np.ndarray:
    """0-based rank of each eval user's positive among all items outside that user's train row.

    Ties count against the positive: the rank is the number of other candidate items scoring at least as
    high. The positive is ranked even if it also appears in the train row. ``eval_items`` [N, S] ranks S
    positives per user (one per held-out split, say) from one scoring pass: ranks are [N, S], and -1 where
    an item is negative (the user has none in that column).
    """
    eval_users, eval_items = np.asarray(eval_users, np.int64), np.asarray(eval_items, np.int64)
    columns = eval_items.reshape(len(eval_items), -1)
    train = sp.csr_matrix(train)
    ranks = []
    with torch.no_grad():
        for start in range(0, len(eval_users), block_size):
            users = eval_users[start : start + block_size]
            pos = torch.as_tensor(columns[start : start + block_size], device=user_emb.device)
            index = pos.clamp(min=0)  # -1 (no positive) reads column 0; masked at the end
            scores = _scores(user_emb[torch.as_tensor(users, device=user_emb.device)], item_emb)
            pos_scores = scores.gather(1, index)
            _exclude(scores, train[users])
            # a positive outside the train row is still in ``scores`` and must not outrank itself
            candidate = scores.gather(1, index) > float("-inf")
            at_least = [(scores >= pos_scores[:, [s]]).sum(dim=1) for s in range(pos.shape[1])]
            block = torch.stack(at_least, dim=1) - candidate.to(torch.int64)
            ranks.append(block.masked_fill(pos < 0, -1))
    out = torch.cat(ranks).cpu().numpy() if ranks else np.zeros((0, columns.shape[1]), np.int64)
    return out if eval_items.ndim > 1 else out[:, 0]


def sampled_ranks(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    users: np.ndarray,
    candidates: np.ndarray,
    block_size: int = 4096,
) -> np.ndarray:
    """0-based rank of column 0 (the positive) within each row of ``candidates``, ties counted against it."""
    users, candidates = np.asarray(users, np.int64), np.asarray(candidates, np.int64)
    ranks = []
    with torch.no_grad():
        for start in range(0, len(users), block_size):
            u = user_emb[torch.as_tensor(users[start : start + block_size], device=user_emb.device)]
            cand = item_emb[torch.as_tensor(candidates[start : start + block_size], device=item_emb.device)]
            scores = torch.einsum("bd,bcd->bc", u.float(), cand.float())
            ranks.append((scores >= scores[:, :1]).sum(dim=1) - 1)
    return torch.cat(ranks).cpu().numpy() if ranks else np.zeros(0, np.int64)


def rank_metrics(ranks: np.ndarray, ks: Sequence[int], prefix: str = "") -> dict[str, float]:
    """``{prefix}recall@k`` (hit rate) and ``{prefix}ndcg@k`` for single-positive 0-based ``ranks``.

    Averages over the ranks given; with no ranks at all every metric is NaN.
    """
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    for k in ks:
        hit = ranks < k
        gain = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
        out[f"{prefix}recall@{k}"] = float(hit.mean()) if len(ranks) else float("nan")
        out[f"{prefix}ndcg@{k}"] = float(gain.mean()) if len(ranks) else float("nan")
    return out


def full_ranking_metrics(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    train: sp.csr_matrix,
    eval_users: np.ndarray,
    eval_items: np.ndarray,
    ks: Sequence[int] = (10, 20),
    block_size: int = 4096,
) -> dict[str, float]:
    """Leave-one-out recall@k / ndcg@k against every item outside the user's train row (see full_ranks)."""
    return rank_metrics(full_ranks(user_emb, item_emb, train, eval_users, eval_items, block_size), ks)


def sampled_metrics(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    users: np.ndarray,
    candidates: np.ndarray,
    ks: Sequence[int] = (10, 20),
) -> dict[str, float]:
    """``sampled_recall@k`` / ``sampled_ndcg@k`` of the positive in column 0 of each candidate row."""
    return rank_metrics(sampled_ranks(user_emb, item_emb, users, candidates), ks, prefix="sampled_")


def popularity_scores(train: sp.csr_matrix) -> np.ndarray:
    """Number of distinct users who interacted with each item (the most-popular baseline's score)."""
    users, items = sp.csr_matrix(train).nonzero()
    keys = np.unique(users.astype(np.int64) * train.shape[1] + items)
    return np.bincount(keys % train.shape[1], minlength=train.shape[1]).astype(np.int64)


def popularity_embeddings(train: sp.csr_matrix, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(user_emb [U, 1] ones, item_emb [I, 1] counts): most-popular as embeddings for the metrics above.

    Equal counts are ordered by a seeded jitter below 1, so the pessimistic tie rule of the metrics does
    not penalise the baseline for ties that a real ranking would break somehow.
    """
    jitter = np.random.default_rng(seed).random(train.shape[1]) * 0.5
    counts = torch.as_tensor(popularity_scores(train) + jitter, dtype=torch.float32)[:, None]
    return torch.ones(train.shape[0], 1), counts


def _scores(user_emb: torch.Tensor, item_emb: torch.Tensor) -> torch.Tensor:
    """float32 [B, I] dot products of every user row with every item row."""
    return user_emb.float() @ item_emb.float().T


def _exclude(scores: torch.Tensor, rows: sp.csr_matrix) -> None:
    """Set ``scores`` to -inf, in place, wherever ``rows`` has a nonzero entry."""
    r, c = rows.nonzero()
    if len(r):
        index = (torch.as_tensor(r, device=scores.device), torch.as_tensor(c, device=scores.device))
        scores.index_put_(index, torch.tensor(float("-inf"), device=scores.device))
