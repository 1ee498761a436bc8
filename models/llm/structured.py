"""Parsing and checking the JSON an LLM returned under a structured-output schema."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jsonschema


@dataclass(frozen=True)
class LLMAnswer:
    """The parsed answer of one request, or the error of its last attempt, with its token counts."""

    row_key: str
    value: Any
    error: str | None
    attempts: int
    text: str | None = None
    prompt_tokens: int = 0  # summed over attempts
    generated_tokens: int = 0
    cached_tokens: int | None = None  # prompt tokens the engine's prefix cache served; None: not reported


class Outcome(NamedTuple):
    """What one attempt of one request returned: generated text or an engine error, and token counts."""

    text: str | None
    error: str | None
    prompt_tokens: int = 0
    generated_tokens: int = 0
    cached_tokens: int | None = None  # None: the engine did not report its prefix-cache hits


def parse_structured(text: str | None, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """The parsed value and None, or None and why the text is not valid JSON for ``schema``."""
    if not text:
        return None, "empty answer"
    try:
        value = json.loads(text, strict=False)  # raw control characters inside strings are tolerated
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} at {exc.pos}"
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        return None, f"schema mismatch: {exc.message}"[:300]
    return value, None


# One attempt over pending requests: row_key -> its outcome; absent keys had no output.
Attempt = Callable[[list[dict[str, Any]], int], dict[str, Outcome]]


def answer_with_retries(
    requests: list[dict[str, Any]], attempt: Attempt, max_retries: int
) -> dict[str, LLMAnswer]:
    """Run ``attempt`` on every request, then again on those that failed, up to ``max_retries`` more times."""
    schemas = {r["row_key"]: r["schema"] for r in requests}
    pending = list(requests)
    answers: dict[str, LLMAnswer] = {}
    tokens: dict[str, tuple[int, int, int | None]] = {}
    for number in range(1, max_retries + 2):
        if not pending:
            break
        outputs = attempt(pending, number)
        for request in pending:
            key = request["row_key"]
            outcome = outputs.get(key, Outcome(None, "no output row"))
            before = tokens.get(key, (0, 0, 0))
            tokens[key] = (
                before[0] + outcome.prompt_tokens,
                before[1] + outcome.generated_tokens,
                summed_counts([before[2], outcome.cached_tokens]),
            )
            value, problem = (
                (None, str(outcome.error)[:300])
                if outcome.error
                else parse_structured(outcome.text, _schema(schemas[key]))
            )
            answers[key] = LLMAnswer(key, value, problem, number, outcome.text, *tokens[key])
        pending = [r for r in pending if answers[r["row_key"]].error is not None]
    return answers


def summed_counts(counts: Iterable[int | None]) -> int | None:
    """The sum of token counts, None when any of them was not reported."""
    listed = list(counts)
    return None if any(count is None for count in listed) else sum(count or 0 for count in listed)


def _schema(schema: dict[str, Any] | str) -> dict[str, Any]:
    """A schema given as a dict or as JSON text (how it travels through Ray Data rows)."""
    return json.loads(schema) if isinstance(schema, str) else schema
