"""The likelihood ranker: a candidate's score is the pointwise mutual information of its card with a profile.

score(card) = log P(card | prefix with the profile) - log P(card | the same prefix with an empty profile).
The second term (the item's prior under the model) depends on the item alone, so it is computed once per
item and model and reused by every user and round. Every candidate is scored on its own: the ranking is
deterministic, and the order candidates come in cannot matter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.llm.prompts import LIKELIHOOD
from models.llm.scoring import scoring_request


def candidate_text(card: str, chars: int) -> str:
    """What is scored of a card: its first ``chars`` characters, on one line."""
    return card[:chars].replace("\n", " ")


def likelihood_requests(
    key: str, profile: str, candidates: Sequence[str], cards: Mapping[str, str], chars: int
) -> list[dict[str, Any]]:
    """One scoring request per candidate (``key#i``): its card after the profile's prefix."""
    prefix = LIKELIHOOD.text(profile)
    return [
        scoring_request(f"{key}#{i}", prefix, candidate_text(cards[item], chars))
        for i, item in enumerate(candidates)
    ]


def prior_requests(items: Sequence[str], cards: Mapping[str, str], chars: int) -> list[dict[str, Any]]:
    """One scoring request per item (keyed by its id): its card after the empty profile's prefix."""
    prefix = LIKELIHOOD.text("")
    return [scoring_request(item, prefix, candidate_text(cards[item], chars)) for item in items]


def pmi_scores(logprobs: Sequence[float | None], priors: Sequence[float | None]) -> np.ndarray:
    """PMI per candidate; -inf where the candidate or its prior could not be scored."""
    given = np.array([np.nan if v is None else v for v in logprobs], np.float64)
    prior = np.array([np.nan if v is None else v for v in priors], np.float64)
    scores = given - prior
    return np.where(np.isfinite(scores), scores, -np.inf)


def positive_ranks(scores: np.ndarray, positives: int) -> np.ndarray:
    """0-based rank of each of the first ``positives`` columns among the negative columns (ties count
    against the positive, so an unscored positive ranks last)."""
    negatives = scores[positives:]
    return (negatives[None, :] >= scores[:positives, None]).sum(axis=1)


def best_first(scores: np.ndarray, depth: int) -> list[int]:
    """The ``depth`` best columns, best first (ties by column)."""
    return [int(c) for c in np.lexsort((np.arange(len(scores)), -scores))[:depth]]
