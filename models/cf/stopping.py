"""Early stopping on validation counted in optimiser steps, which only changes beyond noise can move."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class EarlyStopping:
    """Keeps the best validation score and decides when training has stopped paying.

    The patience clock runs from the last validation that beat the best before it by more than ``renew_z``
    standard errors of their paired per-user difference (or from ``restart``, after a learning-rate decay):
    new bests within noise of the one that last renewed the clock are kept but do not renew it. Training
    stops at a validation when at least ``min_steps`` steps are done and the clock is at least
    ``patience_steps`` steps old, if the current score is below the best by more than ``z`` standard errors;
    a plateau within noise ends it only once the clock is twice the patience old. On a few hundred
    validation users a dip is within noise and training goes on, and so is a creep of new bests a user or
    two apart, which cannot keep training going for ever.
    """

    patience_steps: int
    min_steps: int
    z: float = 2.0
    renew_z: float = 1.0
    best: float = -math.inf
    best_step: int = 0
    best_per_user: np.ndarray | None = field(default=None, repr=False)
    last_gap_z: float = 0.0
    clock_from: int = 0
    clock_per_user: np.ndarray | None = field(default=None, repr=False)

    def update(self, step: int, per_user: np.ndarray) -> bool:
        """Record the validation of ``step`` (each validation user's metric, same users every time);
        True when it is a new best."""
        per_user = np.asarray(per_user, np.float64)
        score = float(per_user.mean()) if len(per_user) else math.nan
        self.last_gap_z = _paired_z(self.best_per_user, per_user)
        if math.isnan(score) or score > self.best:
            self.best, self.best_step, self.best_per_user = score, step, per_user
            if self.clock_per_user is None or _paired_z(per_user, self.clock_per_user) > self.renew_z:
                self.clock_from, self.clock_per_user = step, per_user
            return True
        return False

    def should_stop(self, step: int) -> bool:
        """Whether the validation recorded last, at ``step``, ends training."""
        stale = step - self.clock_from
        if step < self.min_steps or stale < self.patience_steps:
            return False
        return self.last_gap_z > self.z or stale >= 2 * self.patience_steps

    def restart(self, step: int) -> None:
        """Start the patience clock again at ``step``, measuring renewals from the best so far."""
        self.clock_from, self.clock_per_user = step, self.best_per_user

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps to resume the same decisions."""
        return {
            "best": self.best,
            "best_step": self.best_step,
            "best_per_user": self.best_per_user,
            "last_gap_z": self.last_gap_z,
            "clock_from": self.clock_from,
            "clock_per_user": self.clock_per_user,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict``'s output."""
        self.best, self.best_step = state["best"], state["best_step"]
        self.best_per_user, self.last_gap_z = state["best_per_user"], state["last_gap_z"]
        self.clock_from, self.clock_per_user = state["clock_from"], state["clock_per_user"]


def _paired_z(higher: np.ndarray | None, lower: np.ndarray) -> float:
    """How many standard errors ``higher`` lies above ``lower`` (paired over users); 0 without ``higher``."""
    if higher is None or len(lower) < 2 or len(lower) != len(higher):
        return 0.0
    diff = higher - lower
    spread = float(diff.std(ddof=1))
    if spread == 0.0:
        return math.inf if diff.mean() > 0 else 0.0
    return float(diff.mean() / (spread / math.sqrt(len(diff))))
