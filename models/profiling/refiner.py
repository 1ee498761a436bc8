"""Textual-gradient profile refinement (paper eqs. 10-14) for a batch of users, one round at a time.

Per round and user: rank the validation candidates with the current profile (``rank``: the likelihood
ranker's scores, or the listwise ranker's answer), turn the mean rank of the held-out positives into a loss
and show the optimizer the top-ranked wrong items against the worst-ranked true one (``gradient``), rewrite
the profile (``update``); a user stops when every positive ranks first or after ``rounds`` updates and keeps
the profile with the best mean validation rank. The test split is never read here.

A user's state is one flat row (the batch job keeps it in Parquet, one folder per round:
``models.profiling.rounds``); the steps are split at their LLM calls and ``play_round`` chains them, over
Ray Data steps in the job and, in ``refine``, over any ``complete(requests, role)``, as ``PostWriter`` does.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from models.config import ProfilingConfig
from models.degenerate import problems, repaired
from models.llm.prompts import GRADIENT, UPDATE, gradient_schema, gradient_text, profile_text, rank_template
from models.llm.scoring import ScoredContinuation
from models.llm.structured import LLMAnswer
from models.profiling.evidence import numbered_list
from models.profiling.grounding import Vocabulary, grounded_preferences, named, preferences_schema
from models.profiling.likelihood import best_first, likelihood_requests, pmi_scores, positive_ranks
from models.profiling.ranking import borda_ranking, listed_positive_ranks, shown_to_original

Complete = Callable[[list[dict[str, Any]], str], dict[str, LLMAnswer]]
Score = Callable[[list[dict[str, Any]]], dict[str, ScoredContinuation]]
Row = dict[str, Any]
WRONG_SHOWN = 3  # top-ranked wrong candidates shown to the optimizer
# LLM role of each step.
ROLES = {"rank": "ranker", "gradient": "optimizer", "update": "optimizer"}
ROUND_STEPS = ("rank", "gradient", "update")  # the LLM steps of a round, in order; "finish" ends it
Asked = TypeVar("Asked")
Answered = TypeVar("Answered")


def play_round(
    answered: Answered,
    ask: Callable[[Answered, str], Asked],
    answer: Callable[[Asked, str], Answered],
) -> Asked:
    """The one round loop, for rows in memory (``ProfileRefiner.run_round``) and Ray Data (the refine job)
    alike: each of ``ROUND_STEPS`` asked (the answers to the step before applied, the step's requests made;
    ``ProfileRefiner.advance``) and answered, then ``"finish"`` asked; returns what that last ``ask`` gave."""
    for step in ROUND_STEPS:
        answered = answer(ask(answered, step), step)
    return ask(answered, "finish")


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
    """Runs the refinement steps over user-state rows; ``cards`` maps item ids to their item cards and
    ``priors`` (likelihood mode) item ids to their cards' log-probability under the empty profile."""

    settings: ProfilingConfig
    cards: Mapping[str, str]
    seed: int = 0
    catalogue: Sequence[str] = ()  # every item id; needed when validation negatives are resampled
    priors: Mapping[str, float] = field(default_factory=dict)

    @property
    def likelihood(self) -> bool:
        """Whether ranking is by likelihood scores (else by the listwise ranker's answers)."""
        return self.settings.rank_mode == "likelihood"

    def start(
        self, user_id: str, preferences: list[dict[str, str]], valid_candidates: list[str], positives: int = 1
    ) -> Row:
        """A user's state before round 0, from their initial profile (empty when profiling failed); the
        first ``positives`` validation candidates are held-out items, the rest never-seen negatives."""
        text = profile_text(preferences)
        return {
            "user_id": user_id,
            "valid_candidates": list(valid_candidates),
            "valid_positives": positives,
            "preferences": json.dumps(preferences),
            "profile": text,
            "profile_initial": text,
            "best_preferences": json.dumps(preferences),
            "best_rank": float(len(valid_candidates)),
            "best_round": -1,
            "best_valid_scores": [],
            "valid_ranks": [],
            "round_profiles": [],
            "round_gradients": [],
            "ranked_first": [],
            "errors": [],
            "active": True,
        }

    def candidates(self, row: Row, seen: Sequence[str], round_index: int) -> list[str]:
        """This round's validation candidates: fixed, or the positives with freshly drawn negatives."""
        fixed = list(row["valid_candidates"])
        if self.settings.valid_negatives == "fixed" or round_index == 0:
            return fixed
        positives = int(row.get("valid_positives") or 1)
        rng = np.random.default_rng([self.seed, round_index, zlib.crc32(row["user_id"].encode()), 7])
        excluded = set(seen)
        pool = [item for item in self.catalogue if item not in excluded]
        picked = rng.choice(len(pool), size=min(len(fixed) - positives, len(pool)), replace=False)
        return [*fixed[:positives], *(pool[i] for i in picked)]

    def rank_requests(self, row: Row, round_index: int, seen: Sequence[str] = ()) -> list[dict[str, Any]]:
        """The ranking requests of an active user (none once the user has stopped): one scoring request
        per candidate (likelihood), or one listwise request per shuffle."""
        if not row["active"]:
            return []
        row["valid_candidates"] = self.candidates(row, seen, round_index)
        if self.likelihood:
            chars = self.settings.candidate_chars
            candidates = row["valid_candidates"]
            return likelihood_requests(row["user_id"], row["profile"], candidates, self.cards, chars)
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

    def apply_ranking(self, row: Row, answers: Sequence[Any], round_index: int) -> None:
        """Record the mean rank of the positives among the negatives (a failed ranking counts as a miss)
        and keep the best profile. ``answers`` are the scores of the candidates (likelihood; None where
        scoring failed) or the listwise ranker's answers."""
        candidates = row["valid_candidates"]
        size, positives = len(candidates), int(row.get("valid_positives") or 1)
        depth = rank_depth(self.settings, size)
        scores: list[float] = []
        if self.likelihood:
            failed = [f"{sum(a is None for a in answers)} candidates unscored"] if None in answers else []
            pmi = pmi_scores(answers, [self.priors.get(item) for item in candidates])
            ranks, ranked = positive_ranks(pmi, positives), best_first(pmi, depth)
            scores = [float(v) if np.isfinite(v) else None for v in pmi]  # type: ignore[misc]
        else:
            failed = [a.error for a in answers if a.error]
            ranked = ranked_columns(answers, row["user_id"], self.seed, round_index, size, depth)
            ranks = np.asarray(listed_positive_ranks(ranked, positives, size - positives))
        if failed:
            row["errors"] = [*row["errors"], f"round {round_index} rank: {failed[0]}"]
        rank = float(np.mean(ranks))
        row["ranked_first"] = ranked
        row["worst_positive"] = int(np.argmax(ranks))
        row["valid_ranks"] = [*row["valid_ranks"], rank]
        row["round_profiles"] = [*row["round_profiles"], row["profile"]]
        if rank < row["best_rank"] or row["best_round"] < 0:
            row["best_rank"], row["best_round"] = rank, round_index
            row["best_preferences"], row["best_valid_scores"] = row["preferences"], scores
        row["active"] = rank > 0 and round_index < self.settings.rounds

    def gradient_requests(self, row: Row, round_index: int) -> list[dict[str, Any]]:
        """The textual-gradient request of a user who goes on (the rank loss and the items behind it)."""
        if not row["active"]:
            return []
        candidates = row["valid_candidates"]
        positives = int(row.get("valid_positives") or 1)
        rank, depth = row["valid_ranks"][-1], rank_depth(self.settings, len(candidates))
        truth = int(row.get("worst_positive") or 0)
        ranked = row["ranked_first"]
        above = ranked[: ranked.index(truth)] if truth in ranked else []
        wrong = [self.cards[candidates[c]] for c in (above or row["ranked_first"]) if c >= positives]
        outcome = (
            f"{round(rank) + 1} of {len(candidates) - positives + 1} on average"
            if rank < depth
            else f"outside the top {depth}"
        )
        words, truth_card = Vocabulary.from_json(row.get("vocabulary")), self.cards[candidates[truth]]
        truth_has = named(truth_card, words, titles=False)
        wrong_have = [
            p for p in named(" ".join(wrong[:WRONG_SHOWN]), words, titles=False) if p not in truth_has
        ]
        profile_has = named(row["profile"], words, titles=False)
        schema = gradient_schema(
            [p for p in truth_has if p not in profile_has], [p for p in wrong_have if p in profile_has]
        )
        fields = {
            "profile": row["profile"],
            "outcome": outcome,
            "wrong": numbered_list(wrong[:WRONG_SHOWN], 10**9, self.settings.candidate_chars),
            "truth": truth_card[: self.settings.candidate_chars * 2],
            "truth_has": ", ".join(truth_has) or "none of them",
            "wrong_have": ", ".join(wrong_have) or "none of them",
            "feedback": row.get("feedback") or "(no feedback yet)",
        }
        return [{"row_key": row["user_id"], "messages": GRADIENT.messages(fields), "schema": schema}]

    def update_requests(
        self, row: Row, gradients: Sequence[LLMAnswer], round_index: int
    ) -> list[dict[str, Any]]:
        """The update request that applies a user's gradient (none when the gradient failed)."""
        failed = [a.error for a in gradients if a.error]
        if failed:
            row["errors"] = [*row["errors"], f"round {round_index} gradient: {failed[0]}"]
        value = gradients[0].value if gradients else None
        written = gradient_text(value["missing"], value["overstated"], value["why"]) if value else ""
        row["round_gradients"] = [*(row.get("round_gradients") or []), written]
        if value is None:
            return []
        why = repaired(value["why"]).strip()  # a looping reason is cut, or left out when still degenerate
        why = "" if problems("", why, min_body_chars=0) else why
        feedback = gradient_text(value["missing"], value["overstated"], why)
        if not feedback:
            return []
        fields = {"profile": row["profile"], "gradient": feedback}
        schema = preferences_schema(Vocabulary.from_json(row.get("vocabulary")), UPDATE.schema)
        return [{"row_key": row["user_id"], "messages": UPDATE.messages(fields), "schema": schema}]

    def apply_update(self, row: Row, updates: Sequence[LLMAnswer], round_index: int) -> None:
        """Adopt the rewritten profile (a failed update keeps the current one for the next round)."""
        failed = [a.error for a in updates if a.error]
        if failed:
            row["errors"] = [*row["errors"], f"round {round_index} update: {failed[0]}"]
        if updates and updates[0].value is not None:
            words = Vocabulary.from_json(row.get("vocabulary"))
            preferences, _ = grounded_preferences(updates[0].value["preferences"], words)
            row["preferences"], row["profile"] = json.dumps(preferences), profile_text(preferences)

    def advance(
        self, row: Row, step: str, round_index: int, answers: Sequence[Any], seen: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """One move of a round for one user: apply the answers to the step before ``step`` (empty when
        the user asked it nothing) and return ``step``'s requests. A round is ``ROUND_STEPS`` then
        ``"finish"``, which only applies the update; every round (``play_round``) goes through here."""
        if step == "rank":
            return self.rank_requests(row, round_index, seen)
        if step == "gradient":
            if answers:
                self.apply_ranking(row, answers, round_index)
            return self.gradient_requests(row, round_index)
        if step == "update":
            return self.update_requests(row, answers, round_index) if answers else []
        if answers:
            self.apply_update(row, answers, round_index)
        return []

    def scored(self, step: str) -> bool:
        """Whether ``step``'s requests are scoring requests (the likelihood ranker's), not chat requests."""
        return step == "rank" and self.likelihood

    def run_round(
        self,
        rows: list[Row],
        complete: Complete,
        round_index: int,
        seen: Mapping[str, Sequence[str]],
        score: Score | None = None,
    ) -> None:
        """One round for every active row, in place: each step one call for all users (``score`` answers
        the likelihood ranker's requests, ``complete`` the chat ones)."""

        def ask(answers: dict[str, list[Any]], step: str) -> dict[str, list[dict[str, Any]]]:
            return {
                r["user_id"]: self.advance(
                    r, step, round_index, answers[r["user_id"]], seen.get(r["user_id"], ())
                )
                for r in rows
            }

        def answer(asked: dict[str, list[dict[str, Any]]], step: str) -> dict[str, list[Any]]:
            flat = [q for qs in asked.values() for q in qs]
            if self.scored(step):
                assert score is not None, "the likelihood ranker needs a scorer"
                got: dict[str, Any] = {key: scored.logprob for key, scored in score(flat).items()}
            else:
                got = complete(flat, ROLES[step]) if flat else {}
            return {user: [got[q["row_key"]] for q in qs] for user, qs in asked.items()}

        play_round({row["user_id"]: [] for row in rows}, ask, answer)

    def refine(
        self,
        rows: list[Row],
        complete: Complete,
        seen: Mapping[str, Sequence[str]] | None = None,
        score: Score | None = None,
    ) -> list[Row]:
        """Every round for every user (in place); returns the rows with their best profiles."""
        for round_index in range(self.settings.rounds + 1):
            if not any(row["active"] for row in rows):
                break
            self.run_round(rows, complete, round_index, seen or {}, score)
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
        "best_valid_scores": row["best_valid_scores"],
        "valid_ranks": row["valid_ranks"],
        "round_profiles": row["round_profiles"],
        "round_gradients": row.get("round_gradients") or [],
        "errors": row["errors"],
        "vocabulary": row.get("vocabulary"),
    }
