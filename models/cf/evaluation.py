"""CF's test metrics over blocks of users: what one block adds, for any number of users.

``EvalInputs`` are what the evaluation needs beside the embeddings (each user's train and validation items
to exclude, their test items, their seeded 1:99 candidates, the items' popularity); ``BlockEvaluator``
turns a block of users' embeddings into sums of their full-ranking metrics (every test item counts:
LightGCN's protocol), their sampled 1:99 metrics, and the same for most popular; blocks add,
``metrics_of`` divides. Full ranking scores with ``unseen_scores``, the code top-K ranks with, so the two
cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
import torch

from models.cf.inputs import CFInputs
from models.cf.ranking import full_ranking_sums, popularity_scores, rank_metrics, sampled_ranks

KS = (10, 20)


@dataclass(frozen=True)
class EvalInputs:
    """Rows are users in ``user_ids`` order, columns items in ``item_ids`` order."""

    user_ids: pa.Array
    item_ids: pa.Array
    known: sp.csr_matrix  # train and validation items: masked when ranking for the test items
    test: sp.csr_matrix
    candidate_users: np.ndarray  # users with a 1:99 sample, ascending
    candidates: np.ndarray  # [len(candidate_users), 100], the positive first
    popularity: np.ndarray  # train interactions per item

    @classmethod
    def of(cls, inputs: CFInputs) -> EvalInputs:
        """From the encoded dataset of a CF run."""
        users, candidates = inputs.test_candidates
        order = np.argsort(users, kind="stable")
        return cls(
            inputs.user_ids,
            inputs.item_ids,
            inputs.known_before_test,
            inputs.test,
            np.asarray(users)[order],
            np.asarray(candidates)[order],
            popularity_scores(inputs.train),
        )


class BlockEvaluator:
    """Sums of a block of users' test metrics, for the model's embeddings and for most popular."""

    def __init__(self, item_emb: torch.Tensor, inputs: EvalInputs, seed: int = 0):
        self.item_emb, self.inputs = item_emb, inputs
        jitter = np.random.default_rng(seed).random(len(inputs.popularity)) * 0.5  # ties broken, as before
        self.popular_items = torch.as_tensor(inputs.popularity + jitter, dtype=torch.float32)[:, None]

    def __call__(self, rows: np.ndarray, user_emb: torch.Tensor) -> dict[str, float]:
        """``model/...`` and ``most_popular/...`` sums over the users at ``rows`` (embeddings in order)."""
        ones = torch.ones(len(rows), 1)
        sums = self._sums(rows, user_emb, self.item_emb, "model")
        sums.update(self._sums(rows, ones, self.popular_items, "most_popular"))
        return sums

    def _sums(
        self, rows: np.ndarray, users: torch.Tensor, items: torch.Tensor, name: str
    ) -> dict[str, float]:
        known, test = self.inputs.known[rows], self.inputs.test[rows]
        full = full_ranking_sums(users, items, known, test, KS)
        out = {f"{name}/{key}": value for key, value in full.items()}
        found = np.searchsorted(self.inputs.candidate_users, rows)
        found = np.minimum(found, max(len(self.inputs.candidate_users) - 1, 0))
        has = (self.inputs.candidate_users[found] == rows) if len(self.inputs.candidate_users) else found < 0
        ranks = sampled_ranks(users, items, np.flatnonzero(has), self.inputs.candidates[found[has]])
        sampled = rank_metrics(ranks, KS, prefix="sampled_")
        out.update({f"{name}/{key}": value * len(ranks) for key, value in sampled.items() if len(ranks)})
        out[f"{name}/sampled_users"] = float(len(ranks))
        return out


def added(parts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Blocks' sums added key by key."""
    total: dict[str, float] = {}
    for part in parts:
        for key, value in part.items():
            total[key] = total.get(key, 0.0) + value
    return total


def metrics_of(sums: Mapping[str, float], name: str) -> dict[str, float]:
    """The CONTRACT's test metrics of ``name`` (``model`` or ``most_popular``) from the blocks' sums."""
    users, sampled = sums.get(f"{name}/users", 0.0), sums.get(f"{name}/sampled_users", 0.0)
    out = {}
    for k in KS:
        for metric in ("recall", "ndcg"):
            out[f"{metric}@{k}"] = sums.get(f"{name}/{metric}@{k}", 0.0) / users if users else float("nan")
    for k in KS:
        for metric in ("recall", "ndcg"):
            key = f"sampled_{metric}@{k}"
            out[key] = sums.get(f"{name}/{key}", 0.0) / sampled if sampled else float("nan")
    return out
