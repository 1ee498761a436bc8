"""Log-probabilities of continuations with transformers: each distinct prefix is encoded once and its
continuations are scored as batches on its cached keys and values.

The likelihood ranker scores 100 short cards after one profile prefix. vLLM on CPU reads its prefix cache in
whole 32-token blocks only and runs every card as its own request (``benchmarks/ranker_cost``: about 42
computed tokens per card); here a card costs its own tokens and nothing else. Tokenization is the engines'
(prefix with the tokenizer's special tokens, continuation without), so scores agree with vLLM's to the
precision of the dtype.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

from models.llm.scoring import ScoredContinuation


class PrefixScorer:
    """A causal LM that scores ``(row_key, prefix, continuation)`` requests, ``batch_size`` continuations
    of one prefix per forward pass."""

    def __init__(self, model_path: str, dtype: str = "float32", batch_size: int = 64):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).eval()
        self.batch_size = batch_size

    def score(self, requests: Sequence[dict[str, Any]]) -> dict[str, ScoredContinuation]:
        """Each request's summed log-probability of its continuation, by row_key."""
        groups: dict[str, list[dict[str, Any]]] = {}
        for request in requests:
            groups.setdefault(request["prefix"], []).append(request)
        scored: dict[str, ScoredContinuation] = {}
        for prefix, group in groups.items():
            scored.update(self._score_prefix(prefix, group))
        return scored

    @torch.inference_mode()
    def _score_prefix(self, prefix: str, group: list[dict[str, Any]]) -> dict[str, ScoredContinuation]:
        prefix_ids = list(self.tokenizer.encode(prefix))
        tails = [list(self.tokenizer.encode(r["continuation"], add_special_tokens=False)) for r in group]
        encoded = self.model(input_ids=torch.tensor([prefix_ids]), use_cache=True)
        after_prefix = torch.log_softmax(encoded.logits[0, -1].float(), dim=-1)
        sums = torch.zeros(len(group), dtype=torch.float64)
        for start in range(0, len(group), self.batch_size):
            rows = [i for i in range(start, min(start + self.batch_size, len(group))) if tails[i]]
            if rows:
                sums[rows] = self._tail_sums([tails[i] for i in rows], encoded.cache, after_prefix)
        computed = [len(tail) for tail in tails]
        computed[0] += len(prefix_ids)  # the prefix is computed once, with the first continuation
        return {
            r["row_key"]: ScoredContinuation(
                r["row_key"], float(sums[i]), len(tails[i]), len(prefix_ids) + len(tails[i]), computed[i]
            )
            for i, r in enumerate(group)
        }

    def _tail_sums(self, tails: list[list[int]], cache: Any, after_prefix: torch.Tensor) -> torch.Tensor:
        """Summed log-probabilities of non-empty ``tails`` after the cached prefix. Tails are padded on the
        right: under causal attention a real token never sees a pad, so no mask is needed."""
        width = max(len(tail) for tail in tails)
        ids = torch.zeros(len(tails), width, dtype=torch.long)
        real = torch.zeros(len(tails), width, dtype=torch.bool)
        for row, tail in enumerate(tails):
            ids[row, : len(tail)], real[row, : len(tail)] = torch.tensor(tail), True
        batch_cache = copy.deepcopy(cache)
        batch_cache.batch_repeat_interleave(len(tails))
        logits = self.model(input_ids=ids, cache=batch_cache, use_cache=True).logits
        following = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
        return (after_prefix[ids[:, 0]] + torch.where(real[:, 1:], following, 0.0).sum(dim=1)).double()
