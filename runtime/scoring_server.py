"""The pipeline's Serve LLM deployment: ``ray.serve.llm``'s server plus log-probabilities of continuations.

``continuation_logprobs(prefix, continuations)`` scores every continuation after one shared prefix: the
first continuation alone, so the prefix lands in vLLM's prefix cache, then the rest at once, each reading
the cached prefix and computing only its own tail. vLLM skips its prefix cache for requests that ask for
prompt log-probabilities unless told otherwise (``skip_reading_prefix_cache=False``); a continuation whose
needed positions came from the cache (a repeated prefix and continuation) is scored again without it.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from ray.serve.llm.deployment import LLMServer

from models.llm.scoring import continuation_logprob


class ScoringLLMServer(LLMServer):
    """An ``LLMServer`` that also scores continuations (OpenAI routes and handles as before)."""

    async def continuation_logprobs(
        self, prefix: str, continuations: list[str], read_cache: bool = True
    ) -> list[dict[str, Any]]:
        """Per continuation: ``logprob`` (summed over its tokens, None if it failed), ``tokens``,
        ``prompt_tokens``, ``computed_tokens`` (the rest came from the prefix cache) and ``error``;
        ``read_cache=False`` computes every prompt whole (the naive cost, for measurements)."""
        engine = self.engine._engine_client  # vLLM's AsyncLLM
        tokenizer = engine.get_tokenizer()
        prefix_ids = list(tokenizer.encode(prefix))
        tails = [list(tokenizer.encode(text, add_special_tokens=False)) for text in continuations]
        if not tails:
            return []
        first = await self._score(engine, prefix_ids, tails[0], read_cache)
        rest = await asyncio.gather(*(self._score(engine, prefix_ids, t, read_cache) for t in tails[1:]))
        return [first, *rest]

    async def _score(
        self, engine: Any, prefix_ids: list[int], tail: list[int], read_cache: bool
    ) -> dict[str, Any]:
        """One continuation, reading the prefix cache; again without it when a needed position was cached."""
        from vllm import SamplingParams

        ids = prefix_ids + tail
        for skip_cache in (False, True) if read_cache else (True,):
            params = SamplingParams(
                max_tokens=1, prompt_logprobs=0, detokenize=False, skip_reading_prefix_cache=skip_cache
            )
            final = None
            try:
                async for output in engine.generate({"prompt_token_ids": ids}, params, uuid.uuid4().hex):
                    final = output
            except Exception as exc:  # one failed continuation, never a failed call
                return _answer(None, tail, ids, None, f"{type(exc).__name__}: {exc}"[:300])
            if final is None:
                return _answer(None, tail, ids, None, "no output")
            cached = int(final.num_cached_tokens or 0)
            logprob = continuation_logprob(final.prompt_logprobs or [], ids, len(prefix_ids), cached)
            if logprob is not None:
                return _answer(logprob, tail, ids, len(ids) - cached, None)
        return _answer(None, tail, ids, None, "the engine returned no log-probability for the continuation")


def _answer(
    logprob: float | None, tail: list[int], ids: list[int], computed: int | None, error: str | None
) -> dict[str, Any]:
    return {
        "logprob": logprob,
        "tokens": len(tail),
        "prompt_tokens": len(ids),
        "computed_tokens": computed,
        "error": error,
    }
