"""The refiner over broadcast tables: the refine stage's batch steps (``models.profiling.rounds``) with the
item cards, priors and feedback that a worker looks up once (``runtime.broadcast``)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from models.config import TailorMindConfig
from models.profiling.refiner import ProfileRefiner
from models.profiling.rounds import advance_states, start_states
from runtime.broadcast import mapping_of


def refiner_of(cards: Any, priors: Any, config: TailorMindConfig) -> ProfileRefiner:
    """The configured refiner over broadcast item cards and (likelihood ranking) item priors."""
    lookup = mapping_of(cards, "item_id", "card")
    catalogue = list(lookup) if config.profiling.valid_negatives == "resample" else []
    prior = mapping_of(priors, "item_id", "prior") if priors is not None else {}
    return ProfileRefiner(config.profiling, lookup, config.seed, catalogue, prior)


def start_batch(
    batch: pa.Table, cards: Any, feedback: Any, config: TailorMindConfig, priors: Any = None
) -> pa.Table:
    """Initial profiles (with the cohort's columns) as refinement states, with each user's feedback."""
    refiner = refiner_of(cards, priors, config)
    return start_states(batch, refiner, mapping_of(feedback, "user_id", "feedback"))


def advance_batch(
    batch: pa.Table, step: str, cards: Any, priors: Any, config: TailorMindConfig, round_index: int
) -> pa.Table:
    """``advance_states`` of a batch: the previous step's answers applied, ``step``'s requests asked."""
    return advance_states(batch, step, refiner_of(cards, priors, config), round_index)
