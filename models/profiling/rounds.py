"""The refinement state as Arrow batches: one row per user, one Parquet folder per round (no Ray).

A round's batches start from the initial profiles (``start_states``), move through the round's steps
(``advance_states``: ``ProfileRefiner.advance`` per row, the step's requests in ``<step>_requests``), keep
the users still refining for the next round (``active_rows``) and publish those who stopped
(``publish_batch``).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from models.llm.rows import (
    request_json,
    row_answers,
    score_columns,
    scoring_json,
    step_columns,
    step_tokens,
    tally,
)
from models.llm.structured import summed_counts
from models.profiling.refiner import ROUND_STEPS, ProfileRefiner, refined_profile

TOKENS = ("prompt_tokens", "generated_tokens", "cached_tokens")  # per user, one count per round


def start_states(batch: pa.Table, refiner: ProfileRefiner) -> pa.Table:
    """Initial profiles (with the cohort's columns and each user's ``feedback``, or null) as refinement
    states."""
    rows = []
    for row in batch.to_pylist():
        positives = int(row.get("valid_positives") or 1)
        preferences = json.loads(row["preferences"])
        state = refiner.start(row["user_id"], preferences, row["valid_candidates"], positives)
        state |= {counted: [] for counted in TOKENS} | {"llm_calls": None}
        state["feedback"] = row.get("feedback") or ""
        rows.append({**row, **state})
    return state_table(rows, batch.schema)


def advance_states(batch: pa.Table, step: str, refiner: ProfileRefiner, round_index: int) -> pa.Table:
    """Each user's answers to the previous step applied and their ``step`` requests asked
    (``ProfileRefiner.advance``); at ``finish``, the round's token counts recorded and the steps' columns
    dropped."""
    rows = batch.to_pylist()
    previous = ("", *ROUND_STEPS)[(*ROUND_STEPS, "finish").index(step)]
    asked = []
    for row in rows:
        answers = _answers(row, previous, refiner) if previous else []
        requests = refiner.advance(row, step, round_index, answers, row["seen_items"])
        asked.append([(scoring_json if refiner.scored(step) else request_json)(r) for r in requests])
    if step != "finish":
        column = pa.array(asked, pa.list_(pa.string()))
        return state_table(rows, batch.schema).append_column(f"{step}_requests", column)
    for row in rows:
        counts = [step_tokens(row, name) for name in ROUND_STEPS]
        for position, counted in enumerate(TOKENS):  # this round's, summed over its steps
            row[counted] = [*row[counted], summed_counts(c[position] for c in counts)]
        row["llm_calls"] = tally(row, ROUND_STEPS, row.get("llm_calls"))
    step_names = {name for step in ROUND_STEPS for name in (*step_columns(step), *score_columns(step))}
    return state_table(rows, pa.schema([f for f in batch.schema if f.name not in step_names]))


def _answers(row: dict[str, Any], step: str, refiner: ProfileRefiner) -> list[Any]:
    """A row's answers to ``step``: scores of a scoring step, parsed chat answers otherwise."""
    return list(row[f"{step}_scores"]) if refiner.scored(step) else row_answers(row, step)


def state_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows back to Arrow: the batch's columns with their own types, the state columns with theirs."""
    fields = [pa.field(f.name, STATE_TYPES.get(f.name, f.type)) for f in schema]
    new = [pa.field(name, kind) for name, kind in STATE_TYPES.items() if name not in schema.names]
    return pa.Table.from_pylist(rows, schema=pa.schema([*fields, *new]))


STATE_TYPES = {
    "valid_candidates": pa.list_(pa.string()),
    "valid_positives": pa.int64(),
    "preferences": pa.string(),
    "profile": pa.string(),
    "profile_initial": pa.string(),
    "best_preferences": pa.string(),
    "best_rank": pa.float64(),  # the mean over the validation positives
    "best_round": pa.int64(),
    "best_valid_scores": pa.list_(pa.float64()),  # the likelihood ranker's, in the best round
    "worst_positive": pa.int64(),
    "valid_ranks": pa.list_(pa.float64()),
    "round_profiles": pa.list_(pa.string()),
    "round_gradients": pa.list_(pa.string()),  # the textual gradient of each round that asked for one
    "ranked_first": pa.list_(pa.int64()),
    "errors": pa.list_(pa.string()),
    "active": pa.bool_(),
    "prompt_tokens": pa.list_(pa.int64()),
    "generated_tokens": pa.list_(pa.int64()),
    "cached_tokens": pa.list_(pa.int64()),  # null in a round whose engine did not report its prefix cache
    "llm_calls": pa.string(),  # {step: [requests, failed, retries]}, summed over rounds
    "feedback": pa.string(),  # what the user did with earlier posts (the feedback stage's evidence)
    "vocabulary": pa.string(),  # what the user's profile may name (models.profiling.grounding)
}


def active_rows(batch: pa.Table) -> pa.Table:
    """The users still refining (a batch filter: a row filter would re-infer the columns' types)."""
    return batch.filter(batch["active"])


def publish_batch(batch: pa.Table) -> pa.Table:
    """Finished users (those that stopped in this round's folder) as published profiles.

    The cohort's columns travel along, so later stages read one artifact per user; the test candidates
    were carried through the rounds but never shown to the LLM.
    """
    rows = [
        refined_profile(row) | {name: row.get(name) for name in _CARRIED}
        for row in batch.to_pylist()
        if not row["active"]
    ]
    return pa.Table.from_pylist(rows, schema=PUBLISHED_SCHEMA)


PUBLISHED_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("profile_initial", pa.string()),
        ("profile_refined", pa.string()),
        ("preferences_refined", pa.string()),
        ("best_round", pa.int64()),
        ("best_valid_scores", pa.list_(pa.float64())),  # the refined profile's, likelihood mode
        ("valid_ranks", pa.list_(pa.float64())),
        ("round_profiles", pa.list_(pa.string())),
        ("round_gradients", pa.list_(pa.string())),
        ("errors", pa.list_(pa.string())),
        ("vocabulary", pa.string()),  # what the profile may name: gradients that name none of it are counted
        ("prompt_tokens", pa.list_(pa.int64())),  # per round
        ("generated_tokens", pa.list_(pa.int64())),
        ("cached_tokens", pa.list_(pa.int64())),
        ("history", pa.list_(pa.string())),  # the cohort's columns that eval, generate and judge read
        ("cf_items", pa.list_(pa.string())),
        ("test_candidates", pa.list_(pa.string())),
        ("test_candidates_popular", pa.list_(pa.string())),  # popularity-matched negatives (when drawn)
        ("valid_candidates", pa.list_(pa.string())),
        ("valid_positives", pa.int64()),
        ("swap_user", pa.string()),  # whose profile this user's swapped-profile control reads
        ("llm_calls", pa.string()),
    ]
)
_CARRIED = (
    *TOKENS,
    "history",
    "cf_items",
    "test_candidates",
    "test_candidates_popular",
    "valid_candidates",
    "valid_positives",
    "swap_user",
    "llm_calls",
)
