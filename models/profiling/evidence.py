"""Item cards (an item as its captions) and the evidence and candidate lists built from them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def item_card(item: Mapping[str, Any], caption: Mapping[str, Any] | None = None) -> str:
    """An item on one line: title, its own text and tags, then the text summary, image and video descriptions.

    The item's own text stays beside its summary: a small model's summary can lose it (SmolLM2's summaries
    of the demo's 60 MovieLens items named none of the item's genres or tags for 55, e.g. "Zoom (2015) |
    This article discusses the latest advancements of technology."). The batch job passes the captions
    stage's row; the Serve app passes a request item and the VLM's descriptions of its images.
    """
    caption = caption or {}
    tags = ", ".join(item.get("tags") or [])
    own_text = f"{item.get('text') or ''} (tags: {tags})" if tags else item.get("text") or ""
    parts = [
        item["title"],
        own_text,
        caption.get("text_summary"),
        caption.get("image_description"),
        caption.get("video_description"),
    ]
    return " | ".join(part.replace("\n", " ") for part in parts if part)


def numbered_list(cards: Sequence[str], budget_chars: int, per_item_chars: int | None = None) -> str:
    """Cards as numbered lines, each cut to ``per_item_chars``, stopping before ``budget_chars``."""
    lines: list[str] = []
    used = 0
    for index, card in enumerate(cards):
        line = f"[{index}] {card[:per_item_chars] if per_item_chars else card}"
        if used + len(line) > budget_chars and lines:
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines) if lines else "(none)"
