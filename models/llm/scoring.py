"""Log-probability of a text continuation after a prefix: the answer, and reading it off an engine's output.

Every LLM backend scores the same way: the prefix and the continuation are tokenized apart (so no token
straddles the boundary), joined, and the engine's prompt log-probabilities of the continuation's tokens
are summed. Positions an engine took from its prefix cache carry no log-probability: a sum that would
need one is reported as missing, and the caller scores that pair again without the cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class ScoredContinuation:
    """The summed log-probability of one continuation (None when it could not be scored) and its costs."""

    row_key: str
    logprob: float | None
    tokens: int  # of the continuation
    prompt_tokens: int  # of prefix + continuation
    computed_tokens: int | None  # prompt tokens the engine computed (the rest it read from its prefix
    # cache); None where the engine does not say
    error: str | None = None


def scoring_request(row_key: str, prefix: str, continuation: str) -> dict[str, Any]:
    """What a backend scores: ``continuation`` after ``prefix``."""
    return {"row_key": row_key, "prefix": prefix, "continuation": continuation}


def score_distinct(
    requests: Sequence[dict[str, Any]],
    score: Callable[[list[dict[str, Any]]], Mapping[str, ScoredContinuation]],
) -> dict[str, ScoredContinuation]:
    """``score`` of ``requests`` keyed by row_key, each distinct (prefix, continuation) asked once; a repeat
    takes the first's answer with no tokens computed (a refined profile left unchanged asks what its initial
    profile asked)."""
    first: dict[tuple[str, str], str] = {}
    for request in requests:
        first.setdefault((request["prefix"], request["continuation"]), request["row_key"])
    scored = score([r for r in requests if first[(r["prefix"], r["continuation"])] == r["row_key"]])
    answers: dict[str, ScoredContinuation] = {}
    for request in requests:
        key, asked = request["row_key"], first[(request["prefix"], request["continuation"])]
        got = scored.get(asked)
        if got is not None:
            repeat = asked != key
            computed = 0 if repeat and got.computed_tokens is not None else got.computed_tokens
            answers[key] = replace(got, row_key=key, computed_tokens=computed) if repeat else got
    return answers


def continuation_logprob(
    prompt_logprobs: Sequence[Mapping[int, Any] | None],
    token_ids: Sequence[int],
    start: int,
    computed_from: int = 0,
) -> float | None:
    """Sum of each position's log-probability of its own token, over positions ``start`` and later.

    ``prompt_logprobs[p]`` maps token ids to a log-probability (a float, or an object with ``logprob``) at
    prompt position p (position 0 has none). Position p's value is computed from position p - 1, so
    positions whose predecessor the engine read from its prefix cache (``p - 1 < computed_from``) have
    none: the sum is None then, and when any needed entry is missing or lacks its own token.
    """
    if start < 1 or start - 1 < computed_from or len(prompt_logprobs) < len(token_ids):
        return None
    total = 0.0
    for position in range(start, len(token_ids)):
        entry = prompt_logprobs[position]
        if entry is None or token_ids[position] not in entry:
            return None
        found = entry[token_ids[position]]
        value = float(found["logprob"] if isinstance(found, Mapping) else getattr(found, "logprob", found))
        if not math.isfinite(value):
            return None
        total += value
    return total
