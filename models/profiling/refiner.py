"""Textual-gradient profile refinement (paper eqs. 10-14) for a batch of users, one round at a time.

Per round and user: rank the validation candidates with the current profile (``rank``), turn the rank of
the held-out positive into a loss and show the optimizer the top-ranked wrong items against the true one
(``gradient``), rewrite the profile (``update``); a user stops at rank 1 or after ``rounds`` updates and
keeps the profile with the best validation rank. The test split is never read here.

A user's state is one flat row (the batch jobs keep it in Parquet, one folder per round); the steps are
split at their LLM calls so the batch job can run them as Ray Data steps, and ``refine`` composes them
with any ``complete(requests, role)``, as ``PostWriter`` does.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.config import ProfilingConfig
from models.llm.prompts import GRADIENT, UPDATE, profile_text, rank_template
from models.llm.structured import LLMAnswer
from models.profiling.evidence import numbered_list
from models.profiling.ranking import borda_ranking, positive_rank, shown_to_original

Complete = Callable[[list[dict[str, Any]], str], dict[str, LLMAnswer]]
Row = dict[str, Any]
WRONG_SHOWN = 3  # top-ranked wrong candidates shown to the optimizer
# LLM role of each step.
ROLES = {"rank": "ranker", "gradient": "optimizer", "update": "optimizer"}


def user_permutation(user_id: str, seed: int, round_index: int, permutation: int, size: int) -> np.ndarray:
    """The order candidates are shown to one user in one round and shuffle (position carries no signal)."""
    rng = np.random.default_rng([seed, round_index, permutation, zlib.crc32(user_id.encode())])
    return rng.permutation(size)


def rank_requests(
    key: str,
    user_id: str,
    profile: str,
    candidates: Sequence[str],
    cards: Mapping[str, str],
    settings: ProfilingConfig,
    seed: int,
    round_index: int,
) -> list[dict[str, Any]]:
    """One ranking request per shuffle (``rank_permutations``) of a user's candidates, keyed ``key#p``."""
    template = rank_template(len(candidates), rank_depth(settings, len(candidates)))
    requests = []
    for p in range(settings.rank_permutations):
        order = user_permutation(user_id, seed, round_index, p, len(candidates))
        shown = [cards[candidates[i]] for i in order]
        fields = {"profile": profile, "candidates": numbered_list(shown, 10**9, settings.candidate_chars)}
        requests.append(
            {"row_key": f"{key}#{p}", "messages": template.messages(fields), "schema": template.schema}
        )
    return requests


def ranked_columns(
    answers: Sequence[LLMAnswer], user_id: str, seed: int, round_index: int, size: int, depth: int
) -> list[int]:
    """The candidate columns (0 = the positive) the ranker put first, Borda-combined over the shuffles."""
    tops = []
    for p, answer in enumerate(answers):
        order = user_permutation(user_id, seed, round_index, p, size)
        tops.append(shown_to_original(answer.value["top"] if answer.value else [], order))
    return borda_ranking(tops, size, depth)


def rank_depth(settings: ProfilingConfig, num_candidates: int) -> int:
    """How many indices the ranker returns."""
    return min(settings.rank_top_k, num_candidates)


@dataclass
class ProfileRefiner:
    """Runs the refinement steps over user-state rows; ``cards`` maps item ids to their item cards."""

    settings: ProfilingConfig
    cards: Mapping[str, str]
    seed: int = 0
    catalogue: Sequence[str] = ()  # every item id; needed when validation negatives are resampled

    def start(self, user_id: str, preferences: list[dict[str, str]], valid_candidates: list[str]) -> Row:
        """A user's state before round 0, from their initial profile (empty when profiling failed)."""
        text = profile_text(preferences)
        return {
            "user_id": user_id,
            "valid_candidates": list(valid_candidates),
            "preferences": json.dumps(preferences),
            "profile": text,
            "profile_initial": text,
            "best_preferences": json.dumps(preferences),
            "best_rank": len(valid_candidates),
            "best_round": -1,
            "valid_ranks": [],
            "round_profiles": [],
            "ranked_first": [],
            "errors": [],
            "active": True,
        }

    def candidates(self, row: Row, seen: Sequence[str], round_index: int) -> list[str]:
        """This round's validation candidates: fixed, or the positive with freshly drawn negatives."""
        fixed = list(row["valid_candidates"])
        if self.settings.valid_negatives == "fixed" or round_index == 0:
            return fixed
        rng = np.random.default_rng([self.seed, round_index, zlib.crc32(row["user_id"].encode()), 7])
        excluded = set(seen)
        pool = [item for item in self.catalogue if item not in excluded]
        picked = rng.choice(len(pool), size=min(len(fixed) - 1, len(pool)), replace=False)
        return [fixed[0], *(pool[i] for i in picked)]

    def rank_requests(self, row: Row, round_index: int, seen: Sequence[str] = ()) -> list[dict[str, Any]]:
        """The ranking requests of an active user (none once the user has stopped)."""
        if not row["active"]:
            return []
        row["valid_candidates"] = self.candidates(row, seen, round_index)
        return rank_requests(
            row["user_id"],
            row["user_id"],
            row["profile"],
            row["valid_candidates"],
            self.cards,
            self.settings,
            self.seed,
            round_index,
        )

    def apply_ranking(self, row: Row, answers: Sequence[LLMAnswer], round_index: int) -> None:
        """Record the positive's rank (a failed ranking counts as a miss) and keep the best profile."""
        size = len(row["valid_candidates"])
        failed = [a.error for a in answers if a.error]
        if failed:
            row["errors"] = [*row["errors"], f"round {round_index} rank: {failed[0]}"]
        ranked = ranked_columns(
            answers, row["user_id"], self.seed, round_index, size, rank_depth(self.settings, size)
        )
        rank = positive_rank(ranked, size)
        row["ranked_first"] = ranked
        row["valid_ranks"] = [*row["valid_ranks"], rank]
        row["round_profiles"] = [*row["round_profiles"], row["profile"]]
        if rank < row["best_rank"] or row["best_round"] < 0:
            row["best_rank"], row["best_round"] = rank, round_index
            row["best_preferences"] = row["preferences"]
        row["active"] = rank > 0 and round_index < self.settings.rounds

    def gradient_requests(self, row: Row, round_index: int) -> list[dict[str, Any]]:
        """The textual-gradient request of a user who goes on (the rank loss and the items behind it)."""
        if not row["active"]:
            return []
        candidates = row["valid_candidates"]
        rank, depth = row["valid_ranks"][-1], rank_depth(self.settings, len(candidates))
        wrong = [self.cards[candidates[c]] for c in row["ranked_first"] if c != 0][:WRONG_SHOWN]
        outcome = f"{rank + 1} of {len(candidates)}" if rank < depth else f"outside the top {depth}"
        fields = {
            "profile": row["profile"],
            "outcome": outcome,
            "wrong": numbered_list(wrong, 10**9, self.settings.candidate_chars),
            "truth": self.cards[candidates[0]][: self.settings.candidate_chars * 2],
            "feedback": row.get("feedback") or "(no feedback yet)",
        }
        return [{"row_key": row["user_id"], "messages": GRADIENT.messages(fields), "schema": GRADIENT.schema}]

    def update_requests(
        self, row: Row, gradients: Sequence[LLMAnswer], round_index: int
    ) -> list[dict[str, Any]]:
        """The update request that applies a user's gradient (none when the gradient failed)."""
        failed = [a.error for a in gradients if a.error]
        if failed:
            row["errors"] = [*row["errors"], f"round {round_index} gradient: {failed[0]}"]
        if not gradients or gradients[0].value is None:
            return []
        fields = {"profile": row["profile"], "gradient": gradients[0].value["gradient"]}
        return [{"row_key": row["user_id"], "messages": UPDATE.messages(fields), "schema": UPDATE.schema}]

    def apply_update(self, row: Row, updates: Sequence[LLMAnswer], round_index: int) -> None:
        """Adopt the rewritten profile (a failed update keeps the current one for the next round)."""
        failed = [a.error for a in updates if a.error]
        if failed:
            row["errors"] = [*row["errors"], f"round {round_index} update: {failed[0]}"]
        if updates and updates[0].value is not None:
            preferences = updates[0].value["preferences"]
            row["preferences"], row["profile"] = json.dumps(preferences), profile_text(preferences)

    def run_round(
        self, rows: list[Row], complete: Complete, round_index: int, seen: Mapping[str, Sequence[str]]
    ) -> None:
        """One round for every active row, in place: rank, gradient, update, each one call for all users."""
        asked = {r["user_id"]: self.rank_requests(r, round_index, seen.get(r["user_id"], ())) for r in rows}
        answers = complete([q for qs in asked.values() for q in qs], ROLES["rank"])
        for row in rows:
            if asked[row["user_id"]]:
                self.apply_ranking(row, [answers[q["row_key"]] for q in asked[row["user_id"]]], round_index)
        gradient_asks = {r["user_id"]: self.gradient_requests(r, round_index) for r in rows}
        gradients = complete([q for qs in gradient_asks.values() for q in qs], ROLES["gradient"])
        update_asks = {
            r["user_id"]: self.update_requests(r, [gradients[q["row_key"]] for q in qs], round_index)
            for r in rows
            if (qs := gradient_asks[r["user_id"]])
        }
        updates = complete([q for qs in update_asks.values() for q in qs], ROLES["update"])
        for row in rows:
            if update_asks.get(row["user_id"]):
                self.apply_update(
                    row, [updates[q["row_key"]] for q in update_asks[row["user_id"]]], round_index
                )

    def refine(
        self, rows: list[Row], complete: Complete, seen: Mapping[str, Sequence[str]] | None = None
    ) -> list[Row]:
        """Every round for every user (in place); returns the rows with their best profiles."""
        for round_index in range(self.settings.rounds + 1):
            if not any(row["active"] for row in rows):
                break
            self.run_round(rows, complete, round_index, seen or {})
        return rows


def refined_profile(row: Row) -> dict[str, Any]:
    """The published fields of a finished user: initial and best profile, ranks, trace and errors."""
    best = json.loads(row["best_preferences"])
    return {
        "user_id": row["user_id"],
        "profile_initial": row["profile_initial"],
        "profile_refined": profile_text(best),
        "preferences_refined": row["best_preferences"],
        "best_round": row["best_round"] if row["best_round"] >= 0 else None,
        "valid_ranks": row["valid_ranks"],
        "round_profiles": row["round_profiles"],
        "errors": row["errors"],
    }
