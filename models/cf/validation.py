"""Validation during CF training: Recall@20 per validation user, on a bounded seeded sample of users."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from models.cf.graph import HypergraphAdjacency
from models.cf.model import HypergraphCF
from models.cf.ranking import full_ranking_per_user, popularity_embeddings

VALIDATION_METRIC = "recall@20"


class Validator:
    """Scores a model as it stands on the validation positives of at most ``max_users`` users (all of them
    when None), the same users at every call; ``most_popular()`` is the baseline on those users."""

    def __init__(
        self,
        model: HypergraphCF,
        graph: HypergraphAdjacency,
        train: sp.csr_matrix,
        valid: sp.csr_matrix,
        max_users: int | None,
        seed: int,
    ) -> None:
        self.model, self.graph, self.train, self.valid = model, graph, train, valid
        users = np.flatnonzero(np.diff(valid.indptr))
        if max_users is not None and len(users) > max_users:
            users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
        self.users = users

    def __call__(self) -> np.ndarray:
        """Each sampled validation user's Recall@20 under the model's current weights."""
        with torch.no_grad():
            user_emb, item_emb = self.model(self.graph)
        return self._per_user(user_emb, item_emb)

    def most_popular(self) -> float:
        """Mean Recall@20 of the most-popular ranking on the same users."""
        return (
            float(self._per_user(*popularity_embeddings(self.train)).mean())
            if len(self.users)
            else float("nan")
        )

    def _per_user(self, user_emb: torch.Tensor, item_emb: torch.Tensor) -> np.ndarray:
        _, per_user = full_ranking_per_user(
            user_emb, item_emb, self.train, self.valid, (20,), rows=self.users
        )
        return per_user[VALIDATION_METRIC]
