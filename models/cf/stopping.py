"""Early stopping on validation counted in optimiser steps, which only a decline beyond noise can trigger."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class EarlyStopping:
    """Keeps the best validation score and decides when training has stopped paying.

    Training stops at a validation when at least ``min_steps`` steps are done and the best score is at
    least ``patience_steps`` steps old, if the current score is below the best by more than ``z`` standard
    errors of their paired per-user difference. That is the noise rule: on a few hundred validation users
    a dip is within noise and training goes on; a plateau within noise ends it only once the best is twice
    the patience old.
    """

    patience_steps: int
    min_steps: int
    z: float = 2.0
    best: float = -math.inf
    best_step: int = 0
    best_per_user: np.ndarray | None = field(default=None, repr=False)
    last_gap_z: float = 0.0

    def update(self, step: int, per_user: np.ndarray) -> bool:
        """Record the validation of ``step`` (each validation user's metric, same users every time);
        True when it is a new best."""
        per_user = np.asarray(per_user, np.float64)
        score = float(per_user.mean()) if len(per_user) else math.nan
        self.last_gap_z = self._gap_z(per_user)
        if math.isnan(score) or score > self.best:
            self.best, self.best_step, self.best_per_user = score, step, per_user
            return True
        return False

    def should_stop(self, step: int) -> bool:
        """Whether the validation recorded last, at ``step``, ends training."""
        stale = step - self.best_step
        if step < self.min_steps or stale < self.patience_steps:
            return False
        return self.last_gap_z > self.z or stale >= 2 * self.patience_steps

    def _gap_z(self, per_user: np.ndarray) -> float:
        """How many standard errors the best lies above ``per_user`` (paired over users); 0 without a best."""
        if self.best_per_user is None or len(per_user) < 2 or len(per_user) != len(self.best_per_user):
            return 0.0
        diff = self.best_per_user - per_user
        spread = float(diff.std(ddof=1))
        if spread == 0.0:
            return math.inf if diff.mean() > 0 else 0.0
        return float(diff.mean() / (spread / math.sqrt(len(diff))))

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps to resume the same decisions."""
        return {
            "best": self.best,
            "best_step": self.best_step,
            "best_per_user": self.best_per_user,
            "last_gap_z": self.last_gap_z,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict``'s output."""
        self.best, self.best_step = state["best"], state["best_step"]
        self.best_per_user, self.last_gap_z = state["best_per_user"], state["last_gap_z"]
