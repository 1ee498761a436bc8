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
        top, index = torch.topk(unseen_scores(user_emb, item_emb, seen), k, dim=1)
    return top, index


def unseen_scores(user_emb: torch.Tensor, item_emb: torch.Tensor, seen: sp.csr_matrix) -> torch.Tensor:
    """float32 [B, I] dot products of each user row with every item, -inf where row b of ``seen`` has the
    item: the blocked scoring that top-K (``topk_unseen``) and full-ranking evaluation both rank from."""
    with torch.no_grad():
        scores = _scores(user_emb, item_emb)
        _exclude(scores, sp.csr_matrix(seen))
    return scores


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
    positives: sp.csr_matrix,
    ks: Sequence[int] = (10, 20),
    block_size: int = 4096,
) -> dict[str, float]:
    """LightGCN's protocol: recall@k and ndcg@k over every item outside the user's train row, averaged
    over the users with at least one positive (see ``full_ranking_per_user``); NaN when nobody has one."""
    sums = full_ranking_sums(user_emb, item_emb, train, positives, ks, block_size)
    users = sums.pop("users")
    return {key: (value / users if users else float("nan")) for key, value in sums.items()}


def full_ranking_sums(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    train: sp.csr_matrix,
    positives: sp.csr_matrix,
    ks: Sequence[int] = (10, 20),
    block_size: int = 4096,
    rows: np.ndarray | None = None,
) -> dict[str, float]:
    """``full_ranking_per_user``'s metrics summed over users, and ``users`` (their count): what blocks add."""
    _, per_user = full_ranking_per_user(user_emb, item_emb, train, positives, ks, block_size, rows)
    return {
        **{key: float(v.sum()) for key, v in per_user.items()},
        "users": float(len(per_user[f"recall@{ks[0]}"])),
    }


def full_ranking_per_user(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    train: sp.csr_matrix,
    positives: sp.csr_matrix,
    ks: Sequence[int] = (10, 20),
    block_size: int = 4096,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(users, {"recall@k"/"ndcg@k": per-user values}) for the users with at least one positive.

    Row u of ``positives`` holds user u's held-out items, every one of which counts: recall@k = hits in the
    top k / the user's positives, ndcg@k = DCG of the hits / the ideal DCG of min(positives, k) hits. A
    positive's rank is the number of other candidates scoring at least as high (ties count against it);
    candidates are the items outside the train row, plus the positives themselves even where a train row
    also has them. ``rows`` limits the users to those rows of ``user_emb``/``train``/``positives``.
    """
    positives, train = sp.csr_matrix(positives), sp.csr_matrix(train)
    counts = np.diff(positives.indptr)
    users = np.flatnonzero(counts) if rows is None else np.asarray(rows)[counts[np.asarray(rows)] > 0]
    depth = max(ks)
    ideal = np.cumsum(1.0 / np.log2(np.arange(depth) + 2.0))
    out: dict[str, list[np.ndarray]] = {f"{m}@{k}": [] for k in ks for m in ("recall", "ndcg")}
    with torch.no_grad():
        for start in range(0, len(users), block_size):
            block = users[start : start + block_size]
            held, seen = positives[block], train[block]
            block_emb = user_emb[torch.as_tensor(block, device=user_emb.device)]
            scores = unseen_scores(block_emb, item_emb, seen - seen.multiply(held))
            ranks = _positive_ranks(scores, held, min(depth, scores.shape[1]))
            row, n = held.nonzero()[0], np.diff(held.indptr)
            for k in ks:
                hit = ranks < k
                gain = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
                out[f"recall@{k}"].append(np.bincount(row, weights=hit, minlength=len(block)) / n)
                dcg = np.bincount(row, weights=gain, minlength=len(block))
                out[f"ndcg@{k}"].append(dcg / ideal[np.minimum(n, k) - 1])
    empty = np.zeros(0, np.float64)
    return users, {key: (np.concatenate(parts) if parts else empty) for key, parts in out.items()}


def _positive_ranks(scores: torch.Tensor, held: sp.csr_matrix, depth: int) -> np.ndarray:
    """0-based pessimistic rank of each nonzero of ``held`` (row order) in its row of ``scores``; ``depth``
    or more stands for "outside the top ``depth``"."""
    row, col = held.nonzero()
    r, c = torch.as_tensor(row, device=scores.device), torch.as_tensor(col, device=scores.device)
    top = torch.topk(scores, depth, dim=1).values
    value, kth = scores[r, c], top[r, -1]
    count = (top[r] >= value[:, None]).sum(dim=1)
    tie = value == kth  # items tying at the cut may lie beyond the top ``depth``: count them in full
    if tie.any():
        count[tie] = (scores[r[tie]] >= value[tie, None]).sum(dim=1)
    rank = (count - 1).masked_fill(value < kth, depth)
    return rank.cpu().numpy()


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
