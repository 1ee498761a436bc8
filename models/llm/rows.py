"""The row contract of LLM steps over Ray Data: what a row asks and how its answers land in it (no Ray).

A chat step ``S`` reads ``S_requests`` (JSON texts ``{"messages", "schema"}``) and adds ``S_answers``,
``S_errors``, ``S_attempts`` and the row's ``S_prompt_tokens``, ``S_generated_tokens`` and
``S_cached_tokens``. A scoring step ``S`` reads ``S_requests`` (JSON texts ``{"prefix", "continuation"}``)
and adds ``S_scores``, ``S_errors``, ``S_prompt_tokens`` and ``S_computed_tokens``. The Ray steps
(``jobs/llm_step.py``, ``jobs/score_step.py``) fill these columns; stages build requests and read answers
with the helpers here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from models.llm.scoring import ScoredContinuation
from models.llm.structured import LLMAnswer, summed_counts


def request_json(request: dict[str, Any]) -> str:
    """A request (``messages`` and ``schema``; ``row_key`` is dropped) as the JSON text a step row carries."""
    return json.dumps({"messages": request["messages"], "schema": request["schema"]})


def step_columns(step: str) -> dict[str, pa.DataType]:
    """The columns a step adds, with their Arrow types."""
    return {
        f"{step}_answers": pa.list_(pa.string()),
        f"{step}_errors": pa.list_(pa.string()),
        f"{step}_attempts": pa.list_(pa.int32()),
        f"{step}_prompt_tokens": pa.int64(),
        f"{step}_generated_tokens": pa.int64(),
        f"{step}_cached_tokens": pa.int64(),
    }


def row_answers(row: dict[str, Any], step: str) -> list[LLMAnswer]:
    """The answers of one row (a dict from ``to_pylist``), decoded, in the order of its requests."""
    return [
        LLMAnswer(str(i), json.loads(text) if text is not None else None, error, attempts)
        for i, (text, error, attempts) in enumerate(
            zip(row[f"{step}_answers"], row[f"{step}_errors"], row[f"{step}_attempts"], strict=True)
        )
    ]


def tally(row: dict[str, Any], steps: Sequence[str], into: str | None = None) -> str:
    """JSON of ``{step: [requests, failed, retries]}`` for a row's answered steps, added to ``into``."""
    counts: dict[str, list[int]] = json.loads(into) if into else {}
    for step in steps:
        errors = row[f"{step}_errors"]
        attempts = row.get(f"{step}_attempts") or [1] * len(errors)  # a scoring step is not retried per row
        before = counts.get(step, [0, 0, 0])
        counts[step] = [
            before[0] + len(errors),
            before[1] + sum(error is not None for error in errors),
            before[2] + sum(max(0, a - 1) for a in attempts),
        ]
    return json.dumps(counts)


def summed_tallies(tallies: Sequence[str | None], llm: Any, roles: Mapping[str, str]) -> dict[str, Any]:
    """Per step (or role) over rows: the role and its model, requests, failed answers and retries.

    ``llm`` is the config's ``LLMConfig``; ``roles`` maps a step to its role (a role maps to itself).
    """
    total: dict[str, list[int]] = {}
    for text in tallies:
        for step, counts in (json.loads(text) if text else {}).items():
            total[step] = [a + b for a, b in zip(total.get(step, [0, 0, 0]), counts, strict=True)]
    summary = {}
    for step, (n, failed, retries) in total.items():
        role = roles.get(step, step)
        model = getattr(llm, role).model_source if hasattr(llm, role) else None
        summary[step] = {"role": role, "model": model, "requests": n, "failed": failed, "retries": retries}
    return summary


def with_answers(batch: pa.Table, step: str, answers: dict[str, LLMAnswer]) -> pa.Table:
    """``batch`` with its ``S_requests`` column replaced by the answers keyed ``"row/index"``."""
    _check_names(batch, step)
    asked = batch[f"{step}_requests"].to_pylist()
    columns: dict[str, list[Any]] = {name: [] for name in step_columns(step)}
    for row, requests in enumerate(asked):
        got = [answers.get(f"{row}/{index}") for index in range(len(requests or []))]
        columns[f"{step}_answers"].append(
            [json.dumps(a.value) if a is not None and a.error is None else None for a in got]
        )
        columns[f"{step}_errors"].append([(a.error if a is not None else "no answer") for a in got])
        columns[f"{step}_attempts"].append([a.attempts if a is not None else 0 for a in got])
        columns[f"{step}_prompt_tokens"].append(sum(a.prompt_tokens for a in got if a is not None))
        columns[f"{step}_generated_tokens"].append(sum(a.generated_tokens for a in got if a is not None))
        columns[f"{step}_cached_tokens"].append(summed_counts(a.cached_tokens for a in got if a is not None))
    table = batch.drop_columns([f"{step}_requests"])
    for name, kind in step_columns(step).items():
        table = table.append_column(name, pa.array(columns[name], kind))
    return table


def _check_names(batch: pa.Table, step: str) -> None:
    """A step's output columns must not exist yet (a stage's own column named like them would be doubled)."""
    taken = sorted(set(step_columns(step)) & set(batch.column_names))
    if taken:
        raise ValueError(
            f"LLM step '{step}' would add columns that the rows already have: {', '.join(taken)}"
        )


def scoring_json(request: dict[str, Any]) -> str:
    """A scoring request (``prefix``, ``continuation``; ``row_key`` is dropped) as a step row's JSON."""
    return json.dumps({"prefix": request["prefix"], "continuation": request["continuation"]})


def score_columns(step: str) -> dict[str, pa.DataType]:
    """The columns a scoring step adds, with their Arrow types."""
    return {
        f"{step}_scores": pa.list_(pa.float64()),
        f"{step}_errors": pa.list_(pa.string()),
        f"{step}_prompt_tokens": pa.int64(),
        f"{step}_computed_tokens": pa.int64(),
    }


def step_tokens(row: dict[str, Any], step: str) -> tuple[int, int, int | None]:
    """(prompt, generated, prefix-cache-served) tokens of a row's chat or scoring step (a scoring step
    generates nothing; None where the backend did not say what its cache served)."""
    if f"{step}_scores" not in row:
        return row[f"{step}_prompt_tokens"], row[f"{step}_generated_tokens"], row[f"{step}_cached_tokens"]
    prompt, computed = row[f"{step}_prompt_tokens"] or 0, row[f"{step}_computed_tokens"]
    return prompt, 0, None if computed is None else prompt - computed


def with_scores(batch: pa.Table, step: str, scored: dict[str, ScoredContinuation]) -> pa.Table:
    """``batch`` with ``S_requests`` replaced by the scores keyed ``"row/index"``."""
    asked = batch[f"{step}_requests"].to_pylist()
    columns: dict[str, list[Any]] = {name: [] for name in score_columns(step)}
    for row, requests in enumerate(asked):
        got = [scored.get(f"{row}/{index}") for index in range(len(requests or []))]
        columns[f"{step}_scores"].append([a.logprob if a is not None else None for a in got])
        columns[f"{step}_errors"].append([(a.error if a is not None else "no answer") for a in got])
        columns[f"{step}_prompt_tokens"].append(sum(a.prompt_tokens for a in got if a is not None))
        computed = [a.computed_tokens if a is not None else None for a in got]
        columns[f"{step}_computed_tokens"].append(None if None in computed else sum(computed))
    table = batch.drop_columns([f"{step}_requests"])
    for name, kind in score_columns(step).items():
        table = table.append_column(name, pa.array(columns[name], kind))
    return table
