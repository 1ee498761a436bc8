"""Profiles grounded in a user's own items: what the profiler and optimizer may say, and what went wrong.

A small model under a free schema writes "Drama (genre)" four times. Here each preference is chosen from
the genres, tags and taste-cluster names of the user's own history and CF items, and its reason names one
of the user's items that carries it (enums built per user: SmolLM2 free to pick any title gave one film as
the reason for "action", "comedy" and "drama" alike), so every word of a profile comes from the data. Answers
are then checked: a repeated preference is dropped and, when fewer than two distinct preferences remain,
the user's most frequent unused tag fills in (with one of their items that has it) and the profile is
counted as repaired. ``degeneracies`` names what a profile text gets wrong, for the stages' counts;
``named`` finds the user's preferences and titles in a text (what a textual gradient is about, if anything).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_PREFERENCES = 24  # choices offered per user (the most frequent among their items)
MAX_TITLES = 30
MAX_HOLDERS = 8  # titles offered as the reason for one preference
MIN_PREFERENCES, MAX_LISTED = 2, 4
TITLE_CHARS = 60


@dataclass(frozen=True)
class Vocabulary:
    """What one user's profile may say: preferences (most frequent first), item titles, and which of the
    user's items carry each preference."""

    preferences: list[str]
    titles: list[str]
    holders: dict[str, list[str]]  # preference -> titles of the user's items that have it (most recent first)

    def to_json(self) -> str:
        """As a step row carries it."""
        return json.dumps({"preferences": self.preferences, "titles": self.titles, "holders": self.holders})

    @classmethod
    def from_json(cls, text: str | None) -> Vocabulary:
        """From ``to_json``'s text (an empty vocabulary for None)."""
        data = json.loads(text) if text else {}
        return cls(data.get("preferences", []), data.get("titles", []), data.get("holders", {}))

    @property
    def grounded(self) -> bool:
        """Whether there is enough to choose from (else the free, length-bounded schema applies)."""
        return len(self.preferences) >= MIN_PREFERENCES and bool(self.titles)


def vocabulary(
    items: Sequence[str],
    titles: Mapping[str, str],
    tags: Mapping[str, Sequence[str]],
    clusters: Mapping[str, str | None] | None = None,
) -> Vocabulary:
    """A user's vocabulary from their evidence ``items`` (history then CF items): their tags and the
    names of their taste clusters, most frequent first, and their titles."""
    counts: Counter[str] = Counter()
    holders: dict[str, list[str]] = {}
    for item in items:
        names = [*(tags.get(item) or []), *([clusters.get(item) or ""] if clusters else [])]
        title = _title(titles.get(item, item))
        for name in dict.fromkeys(n.strip() for n in names if n and n.strip()):
            counts[name] += 1
            held = holders.setdefault(name, [])
            if title not in held and len(held) < MAX_HOLDERS:
                held.append(title)
    preferences = [name for name, _ in counts.most_common(MAX_PREFERENCES)]
    listed = list(dict.fromkeys(_title(titles.get(item, item)) for item in items))[:MAX_TITLES]
    return Vocabulary(preferences, listed, {p: holders[p] for p in preferences})


def _title(title: str) -> str:
    return title.replace("\n", " ")[:TITLE_CHARS]


def preferences_schema(vocabulary: Vocabulary, free: dict[str, Any]) -> dict[str, Any]:
    """The answer schema: each preference from the vocabulary with one of its holders' titles as the reason
    (one ``anyOf`` branch per preference), else ``free`` (the template's own)."""
    if not vocabulary.grounded:
        return free
    branches = [
        {
            "type": "object",
            "properties": {
                "preference": {"type": "string", "enum": [name]},
                "reason": {"type": "string", "enum": vocabulary.holders[name]},
            },
            "required": ["preference", "reason"],
            "additionalProperties": False,
        }
        for name in vocabulary.preferences
    ]
    listed = {
        "type": "array",
        "minItems": MIN_PREFERENCES,
        "maxItems": MAX_LISTED,
        "items": {"anyOf": branches},
    }
    return {
        "type": "object",
        "properties": {"preferences": listed},
        "required": ["preferences"],
        "additionalProperties": False,
    }


def grounded_preferences(
    preferences: list[dict[str, str]], vocabulary: Vocabulary
) -> tuple[list[dict[str, str]], bool]:
    """(preferences with repeats dropped and, where fewer than two remain, filled from the vocabulary;
    whether a fill was needed)."""
    kept: list[dict[str, str]] = []
    for preference in preferences:
        if preference["preference"].strip().lower() not in {k["preference"].strip().lower() for k in kept}:
            kept.append(preference)
    repaired = False
    for name in vocabulary.preferences:
        if len(kept) >= MIN_PREFERENCES:
            break
        if name not in {k["preference"] for k in kept}:
            kept.append({"preference": name, "reason": (vocabulary.holders.get(name) or [""])[0]})
            repaired = True
    return kept, repaired


_WORD = re.compile(r"[A-Za-z]")


def degeneracies(preferences: Sequence[Mapping[str, str]]) -> list[str]:
    """What is wrong with a profile: ``fewer_than_2``, ``repeated_preference``, ``reason_is_preference``,
    ``non_english`` (under half its letters Latin), in that order; empty when nothing is."""
    found = []
    names = [p.get("preference", "").strip().lower() for p in preferences]
    if len(set(names)) < MIN_PREFERENCES:
        found.append("fewer_than_2")
    if len(set(names)) < len(names):
        found.append("repeated_preference")
    if any(p.get("reason", "").strip().lower() == name for p, name in zip(preferences, names, strict=True)):
        found.append("reason_is_preference")
    text = " ".join(f"{p.get('preference', '')} {p.get('reason', '')}" for p in preferences)
    letters = [c for c in text if c.isalpha()]
    if letters and sum(bool(_WORD.match(c)) for c in letters) * 2 < len(letters):
        found.append("non_english")
    return found


_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")


def named(text: str, vocabulary: Vocabulary, titles: bool = True) -> list[str]:
    """The vocabulary's preferences (and, with ``titles``, its titles without a trailing year) that
    ``text`` names as whole words, in any case; most frequent preferences first."""
    lowered = text.lower()
    words = [*vocabulary.preferences, *(_YEAR.sub("", t) for t in vocabulary.titles if titles)]
    return [
        w for w in dict.fromkeys(words) if w and re.search(rf"(?<!\w){re.escape(w.lower())}(?!\w)", lowered)
    ]
