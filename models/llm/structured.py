"""Parsing and checking the JSON an LLM returned under a structured-output schema."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema


@dataclass(frozen=True)
class LLMAnswer:
    """The parsed answer of one request, or the error of its last attempt."""

    row_key: str
    value: Any
    error: str | None
    attempts: int
    text: str | None = None


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


# One attempt over pending requests: row_key -> (generated text, engine error); absent keys had no output.
Attempt = Callable[[list[dict[str, Any]], int], dict[str, tuple[str | None, str | None]]]


def answer_with_retries(
    requests: list[dict[str, Any]], attempt: Attempt, max_retries: int
) -> dict[str, LLMAnswer]:
    """Run ``attempt`` on every request, then again on those that failed, up to ``max_retries`` more times."""
    schemas = {r["row_key"]: r["schema"] for r in requests}
    pending = list(requests)
    answers: dict[str, LLMAnswer] = {}
    for number in range(1, max_retries + 2):
        if not pending:
            break
        outputs = attempt(pending, number)
        for request in pending:
            key = request["row_key"]
            if key not in outputs:
                answers[key] = LLMAnswer(key, None, "no output row", number)
                continue
            text, error = outputs[key]
            value, problem = (None, str(error)[:300]) if error else parse_structured(text, schemas[key])
            answers[key] = LLMAnswer(key, value, problem, number, text)
        pending = [r for r in pending if answers[r["row_key"]].error is not None]
    return answers
