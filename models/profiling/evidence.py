"""Item cards (an item as its captions) and the evidence and candidate lists built from them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def item_card(item: dict[str, Any], caption: dict[str, Any] | None) -> str:
    """One line per item: its title, then every caption it has (text summary, image, video)."""
    parts = [item["title"]]
    if caption:
        parts += [
            caption[c] for c in ("text_summary", "image_description", "video_description") if caption.get(c)
        ]
    elif item.get("text"):
        parts.append(item["text"])
    return " | ".join(part.replace("\n", " ") for part in parts)


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
