"""What the refine stage reports of its published profiles: validation ranks, LLM calls, tokens per round."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from models.degenerate import problems
from models.llm.config import LLMConfig
from models.llm.rows import summed_tallies
from models.profiling.grounding import Vocabulary, named
from models.profiling.refiner import ROLES
from models.profiling.rounds import TOKENS


def summarise(published: str, llm: LLMConfig) -> dict[str, Any]:
    """Validation-rank summary of the published profiles (read in a task: one small column per user)."""
    import pyarrow.parquet as pq

    table = pq.read_table(published, columns=["valid_ranks", "llm_calls", *TOKENS])
    ranks = table["valid_ranks"].combine_chunks()
    rounds = list_positions(ranks)
    values = ranks.flatten().to_numpy(zero_copy_only=False)
    initial = values[rounds == 0]
    selected = np.minimum.reduceat(values, np.flatnonzero(rounds == 0)) if len(initial) else initial
    return {
        "users": len(ranks),
        "mean_initial_valid_rank": float(initial.mean()) if len(initial) else None,
        "mean_selected_valid_rank": float(selected.mean()) if len(selected) else None,
        "selected_on": "validation: each user keeps the profile with the best validation rank, so "
        "mean_selected_valid_rank is optimistic; the eval stage measures on the test split",
        "stopped_at_rank_1": int((selected == 0).sum()),
        "llm_calls": summed_tallies(table["llm_calls"].to_pylist(), llm, ROLES),
        "tokens_per_round": tokens_per_round(table),
        **gradient_counts(published),
    }


def gradient_counts(published: str) -> dict[str, int]:
    """Textual gradients written, those naming none of their user's genres, tags or titles, and those whose
    text loops (the optimizer reads them without the loop) (read a batch at a time: the gradients' text is
    the largest column)."""
    import pyarrow.dataset

    written = content_free = degenerate = 0
    columns = ["round_gradients", "vocabulary"]
    for batch in pyarrow.dataset.dataset(published, format="parquet").to_batches(columns=columns):
        for gradients, words in zip(*(batch[name].to_pylist() for name in columns), strict=True):
            vocabulary = Vocabulary.from_json(words)
            for text in filter(None, gradients or []):
                written += 1
                content_free += not named(text, vocabulary)
                degenerate += bool(problems("", text, min_body_chars=0))
    return {"gradients": written, "content_free_gradients": content_free, "degenerate_gradients": degenerate}


def list_positions(lists: pa.ListArray) -> np.ndarray:
    """Each flattened value's position in its own list (0 for a list's first value)."""
    offsets = lists.offsets.to_numpy()
    lengths = np.diff(offsets)
    return np.arange(offsets[-1] - offsets[0]) - np.repeat(offsets[:-1] - offsets[0], lengths)


def tokens_per_round(table: pa.Table) -> list[dict[str, Any]]:
    """Per refinement round over the users in it: prompt, generated and prefix-cache-served tokens, and the
    cache's hit rate (None where the engine did not report it)."""
    rounds = list_positions(table["prompt_tokens"].combine_chunks())  # the counts' lists have equal lengths
    users = np.bincount(rounds)
    per_round: dict[str, list[int | None]] = {}
    for name in TOKENS:
        counts = table[name].combine_chunks().flatten()
        sums = np.bincount(rounds, counts.fill_null(0).to_numpy(zero_copy_only=False), len(users))
        unreported = np.bincount(rounds, counts.is_null().to_numpy(zero_copy_only=False), len(users))
        per_round[name] = [
            None if missing else int(total) for total, missing in zip(sums, unreported, strict=True)
        ]
    summary = []
    for index, in_round in enumerate(users):
        totals = {name: counts[index] for name, counts in per_round.items()}
        prompt, cached = totals["prompt_tokens"] or 0, totals["cached_tokens"]
        hit_rate = cached / prompt if cached is not None and prompt else None
        summary.append({"round": index, "users": int(in_round), **totals, "prefix_cache_hit_rate": hit_rate})
    return summary
