"""Feedback events as evidence for the textual gradient: kept posts for, discarded posts against, edits as
what the user changed."""

from __future__ import annotations

import difflib
from collections import Counter
from typing import Any

ACTIONS = ("keep", "edit", "discard")


def edit_difference(generated: str, edited: str, max_chars: int) -> str:
    """What an edit removed from and added to a post, word by word, each side cut to ``max_chars``."""
    before, after = generated.split(), edited.split()
    removed: list[str] = []
    added: list[str] = []
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "delete"):
            removed.append(" ".join(before[i1:i2]))
        if tag in ("replace", "insert"):
            added.append(" ".join(after[j1:j2]))
    cut = " … ".join(removed)[:max_chars] or "nothing"
    put = " … ".join(added)[:max_chars] or "nothing"
    return f"removed: {cut}; added: {put}"


def unique_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One event per event id, the first received (a repeat stored after compaction is dropped)."""
    first: dict[str, dict[str, Any]] = {}
    for event in sorted(events, key=lambda e: e["received_at"]):
        first.setdefault(event["event_id"], event)
    return list(first.values())


def last_action_per_post(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each post's latest event (by timestamp, then event id), oldest first."""
    latest: dict[str, dict[str, Any]] = {}
    for event in sorted(events, key=lambda e: (e["timestamp"], e["event_id"])):
        latest.pop(event["post_id"], None)  # re-inserted last: the dict stays in time order
        latest[event["post_id"]] = event
    return list(latest.values())


def user_evidence(events: list[dict[str, Any]], max_events: int, edit_chars: int) -> str:
    """One user's latest events (one per post: the last action wins) as lines for the gradient prompt."""
    lines = []
    for event in last_action_per_post(events)[-max_events:]:
        title = event["post_title"]
        if event["action"] == "keep":
            lines.append(f"- kept the post '{title}' (evidence for the profile)")
        elif event["action"] == "discard":
            lines.append(f"- discarded the post '{title}' (evidence against the profile)")
        else:
            difference = edit_difference(event["post_body"], event["edited_text"] or "", edit_chars)
            lines.append(f"- edited the post '{title}': {difference}")
    return "\n".join(lines)


def action_counts(events: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per profile version, how many posts were kept, edited and discarded (the last action per post)."""
    counts: dict[str, Counter[str]] = {}
    for event in last_action_per_post(events):
        counts.setdefault(event["profile_version"], Counter())[event["action"]] += 1
    return {version: {action: counter[action] for action in ACTIONS} for version, counter in counts.items()}
