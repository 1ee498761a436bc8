"""Hypergraph collaborative filtering (TailorMind): graph, model, losses, sampling and ranking metrics."""

from models.cf.graph import HypergraphAdjacency, build_hypergraph, symmetric_weights
from models.cf.losses import bpr_loss, sampled_softmax_loss
from models.cf.model import HypergraphCF
from models.cf.ranking import (
    full_ranking_metrics,
    full_ranking_per_user,
    full_ranking_sums,
    popularity_embeddings,
    popularity_scores,
    rank_metrics,
    sampled_ranks,
    topk_unseen,
    unseen_scores,
)
from models.cf.sampling import is_seen, sample_bpr_triples, seen_keys

__all__ = [
    "HypergraphAdjacency",
    "HypergraphCF",
    "bpr_loss",
    "build_hypergraph",
    "full_ranking_metrics",
    "full_ranking_per_user",
    "full_ranking_sums",
    "is_seen",
    "popularity_embeddings",
    "popularity_scores",
    "rank_metrics",
    "sample_bpr_triples",
    "sampled_ranks",
    "sampled_softmax_loss",
    "seen_keys",
    "symmetric_weights",
    "topk_unseen",
    "unseen_scores",
]
