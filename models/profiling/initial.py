"""The initial profile (paper eq. 9): a user's history and CF items, as cards, within a budget, asked of the
profiler in a schema grounded in those items; the answers parsed into profiles, and their summary."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.evaluation import label_counts
from models.llm.config import LLMConfig
from models.llm.prompts import PROFILE, profile_text
from models.llm.rows import request_json, row_answers, summed_tallies, tally
from models.profiling.evidence import numbered_list
from models.profiling.grounding import (
    Vocabulary,
    degeneracies,
    grounded_preferences,
    preferences_schema,
    vocabulary,
)


def profile_request(
    key: str,
    history_cards: list[str],
    recommended_cards: list[str],
    budget_chars: int,
    vocabulary: Vocabulary | None = None,
) -> dict[str, Any]:
    """The profiler request: two thirds of the budget for the history (most recent first), a third for CF;
    the answer grounded in the user's ``vocabulary`` when there is one."""
    fields = {
        "history": numbered_list(history_cards, budget_chars * 2 // 3),
        "recommended": numbered_list(recommended_cards, budget_chars // 3),
    }
    schema = preferences_schema(vocabulary, PROFILE.schema) if vocabulary is not None else PROFILE.schema
    return {"row_key": key, "messages": PROFILE.messages(fields), "schema": schema}


def profile_requests(
    batch: pa.Table,
    cards: Mapping[str, str],
    titles: Mapping[str, str],
    tags: Mapping[str, Sequence[str]],
    clusters: Mapping[str, str | None],
    evidence_chars: int,
    default_cards: list[str] | None = None,
) -> pa.Table:
    """The profiler request of each user: history (most recent first) and CF items as cards, answered in a
    schema grounded in those items (``models.profiling.grounding``); a cold-start user's few items with the
    catalogue's ``default_cards`` in the CF items' place."""
    requests, vocabularies = [], []
    for row in batch.select(
        [c for c in ("user_id", "history", "cf_items") if c in batch.column_names]
    ).to_pylist():
        evidence = [*row["history"], *(row.get("cf_items") or [])]
        words = vocabulary(evidence, titles, tags, clusters)
        recommended = default_cards if default_cards is not None else [cards[i] for i in row["cf_items"]]
        request = profile_request(
            row["user_id"], [cards[i] for i in row["history"]], recommended, evidence_chars, words
        )
        requests.append([request_json(request)])
        vocabularies.append(words.to_json())
    table = batch.append_column("profile_requests", pa.array(requests, pa.list_(pa.string())))
    return table.append_column("vocabulary", pa.array(vocabularies, pa.string()))


def parse_batch(batch: pa.Table) -> pa.Table:
    """Each user's preferences (JSON, repeats dropped and a second filled in from their vocabulary when
    needed), profile text, error (empty profile when the profiler failed), what was degenerate in the
    answer and whether it was repaired."""
    preferences, texts, errors, calls, degenerate, repaired = [], [], [], [], [], []
    columns = ["profile_answers", "profile_errors", "profile_attempts", "vocabulary"]
    for row in batch.select(columns).to_pylist():
        answer = row_answers(row, "profile")[0]
        value = answer.value["preferences"] if answer.value else []
        found = degeneracies(value) if value else []
        fixed, filled = (
            grounded_preferences(value, Vocabulary.from_json(row["vocabulary"])) if value else ([], False)
        )
        preferences.append(json.dumps(fixed))
        texts.append(profile_text(fixed))
        errors.append(answer.error)
        calls.append(tally(row, ["profile"]))
        degenerate.append(found)
        repaired.append(filled)
    table = batch.drop_columns(["profile_answers", "profile_errors", "profile_attempts"])
    table = table.append_column("preferences", pa.array(preferences, pa.string()))
    table = table.append_column("text", pa.array(texts, pa.string()))
    table = table.append_column("error", pa.array(errors, pa.string()))
    table = table.append_column("degenerate", pa.array(degenerate, pa.list_(pa.string())))
    table = table.append_column("repaired", pa.array(repaired, pa.bool_()))
    return table.append_column("llm_calls", pa.array(calls, pa.string()))


def profiles_summary(path: str, llm: LLMConfig) -> dict[str, Any]:
    """Users profiled and failed, degenerate answers by kind and repaired profiles (read in a task)."""
    table = pq.read_table(path, columns=["error", "llm_calls", "degenerate", "repaired"])
    errors = table["error"]
    calls = summed_tallies(table["llm_calls"].to_pylist(), llm, {"profile": "profiler"})
    return {
        "users": len(errors),
        "failed": len(errors) - errors.null_count,
        "degenerate": label_counts(table["degenerate"]),
        "repaired": int(pc.sum(table["repaired"]).as_py() or 0),
        "llm_calls": calls,
    }
