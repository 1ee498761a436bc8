"""Parsing and checking the JSON an LLM returned under a structured-output schema."""

from __future__ import annotations

import json
from typing import Any

import jsonschema


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
