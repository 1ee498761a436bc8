"""The initial profile request (paper eq. 9): a user's history and CF items, as cards, within a budget."""

from __future__ import annotations

from typing import Any

from models.llm.prompts import PROFILE
from models.profiling.evidence import numbered_list


def profile_request(
    key: str, history_cards: list[str], recommended_cards: list[str], budget_chars: int
) -> dict[str, Any]:
    """The profiler request: two thirds of the budget for the history (most recent first), a third for CF."""
    fields = {
        "history": numbered_list(history_cards, budget_chars * 2 // 3),
        "recommended": numbered_list(recommended_cards, budget_chars // 3),
    }
    return {"row_key": key, "messages": PROFILE.messages(fields), "schema": PROFILE.schema}
