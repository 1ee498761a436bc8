"""Scoring steps over Ray Data: each row asks for log-probabilities of continuations; the scores land in it.

A step named ``S`` reads ``S_requests`` (a list of JSON texts ``{"prefix": ..., "continuation": ...}``) and
replaces it with ``S_scores`` (each continuation's summed log-probability, null where scoring failed),
``S_errors``, and the row's ``S_prompt_tokens`` and ``S_computed_tokens`` (prompt tokens the engine computed
rather than read from its prefix cache; null where the backend does not say). Backends:

- ``serve``: the role's deployment scores each distinct prefix's continuations in one call, the prefix
  computed once and read from vLLM's prefix cache by the rest (``runtime.scoring_server``).
- ``http``: an OpenAI-compatible completions route with ``echo`` and ``logprobs``, one request per pair.
- ``vllm``: ``ray.data.llm``'s processor, one row per pair. vLLM reads no prefix cache for requests that
  ask for prompt log-probabilities (and the processor cannot tell which positions came from one), so every
  pair computes its whole prompt: the naive cost, measured in ``benchmarks/ranker_cost``.

With ``scorer: transformers`` (any backend) an actor pool of the role's weights scores instead, each prefix
encoded once and its continuations batched on its cached keys and values (``models.llm.prefix_scoring``).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

from jobs.llm_step import _ROW, LIGHT, _rejoin, _tag_rows
from models.llm.config import LLMRoleConfig
from models.llm.rows import score_columns, with_scores
from models.llm.scoring import ScoredContinuation, continuation_logprob, score_distinct
from models.tiny import resolve_model_source

_INDEX, _PREFIX, _TAIL, _START = "__index", "__prefix", "__continuation", "__start"


def _batch_scores(
    batch: pa.Table, step: str, score: Callable[[list[dict[str, Any]]], Mapping[str, ScoredContinuation]]
) -> pa.Table:
    """``batch`` with the scores of every pair it asks for (keyed ``row/index``), each distinct pair scored
    once by ``score``."""
    requests = [
        {"row_key": f"{row}/{index}", **json.loads(text)}
        for row, asked in enumerate(batch[f"{step}_requests"].to_pylist())
        for index, text in enumerate(asked or [])
    ]
    return with_scores(batch, step, score_distinct(requests, score) if requests else {})


def _client_scores(batch: pa.Table, step: str, role_json: str, api_key: str | None) -> pa.Table:
    """One batch of a serve/http scoring step: every pair of the batch at once."""
    from runtime.chat import chat_client

    role = LLMRoleConfig.model_validate_json(role_json)
    return _batch_scores(batch, step, chat_client(role, api_key).score)


class _PrefixScoring:
    """An actor of a ``scorer: transformers`` step: the role's weights, loaded once, score every batch."""

    def __init__(self, step: str, role_json: str):
        import torch

        from models.llm.engine import engine_dtype
        from models.llm.prefix_scoring import PrefixScorer

        role = LLMRoleConfig.model_validate_json(role_json)
        torch.set_num_threads(max(1, int(role.cpus_per_engine)))
        self.step = step
        self.scorer = PrefixScorer(resolve_model_source(role.model_source), engine_dtype(role))

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _batch_scores(batch, self.step, self.scorer.score)


class ScoreStep:
    """One scoring step of a role over a Dataset (see the module docstring for the row contract)."""

    def __init__(self, step: str, role: LLMRoleConfig):
        self.step, self.role = step, role

    def __call__(self, ds: Any) -> Any:
        """The lazy Dataset of ``ds`` with this step's scores (vllm: scored eagerly, then joined back)."""
        import ray.data

        if self.role.backend == "vllm" and self.role.scorer == "engine":
            return self._processor_step(ds)
        # Blocks of one request batch each (as LLMStep): a big block would be scored one batch at a time.
        blocks = ds.repartition(target_num_rows_per_block=self.role.batch_size)
        if self.role.scorer == "transformers":
            return blocks.map_batches(
                _PrefixScoring,
                fn_constructor_kwargs={"step": self.step, "role_json": self.role.model_dump_json()},
                batch_format="pyarrow",
                batch_size=self.role.batch_size,
                compute=ray.data.ActorPoolStrategy(size=self.role.num_engines),
                num_cpus=self.role.cpus_per_engine,
            )
        if self.role.backend == "serve":
            from runtime.llm import ensure_llm_deployment

            ensure_llm_deployment(self.role)
        return blocks.map_batches(
            _client_scores,
            fn_kwargs={
                "step": self.step,
                "role_json": self.role.model_dump_json(),
                "api_key": os.environ.get(self.role.api_key_env) if self.role.backend == "http" else None,
            },
            batch_format="pyarrow",
            batch_size=self.role.batch_size,
            compute=ray.data.TaskPoolStrategy(size=self.role.batches_in_flight * self.role.num_engines),
            **LIGHT,
        )

    def _processor_step(self, ds: Any) -> Any:
        rows = ds.map_batches(_tag_rows, batch_format="pyarrow", **LIGHT).materialize()
        pairs = rows.map_batches(_explode, fn_kwargs={"step": self.step}, batch_format="pyarrow", **LIGHT)
        if pairs.count() == 0:
            return _rejoin(rows, None, self.step, _collect, _join_scores)
        scored = _processor(self.role)(pairs).map_batches(_outcomes, batch_format="pyarrow", **LIGHT)
        return _rejoin(rows, scored.materialize(), self.step, _collect, _join_scores)


def _explode(batch: pa.Table, step: str) -> pa.Table:
    """One row per pair: (__row, __index, __prefix, __continuation)."""
    rows = [
        (row_id, index, request["prefix"], request["continuation"])
        for row_id, asked in zip(batch[_ROW].to_pylist(), batch[f"{step}_requests"].to_pylist(), strict=True)
        for index, request in enumerate(json.loads(text) for text in asked or [])
    ]
    names = (_ROW, _INDEX, _PREFIX, _TAIL)
    kinds = (pa.string(), pa.int32(), pa.string(), pa.string())
    return pa.table(
        {n: pa.array([r[i] for r in rows], k) for i, (n, k) in enumerate(zip(names, kinds, strict=True))}
    )


@functools.lru_cache(maxsize=4)
def _tokenizer(model_source: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_source(model_source))


def _processor(role: LLMRoleConfig) -> Any:
    """A ray.data.llm vLLM processor that returns each pair's prompt log-probabilities, reduced to a sum."""
    from ray.data.llm import build_processor

    from runtime.llm import engine_processor_config

    config = engine_processor_config(
        role,
        chat_template_stage=False,  # the pairs arrive tokenized: prefix and continuation apart
        tokenize_stage=False,
        detokenize_stage=False,
    )

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        tokenizer = _tokenizer(role.model_source)
        prefix = list(tokenizer.encode(row[_PREFIX]))
        tail = list(tokenizer.encode(row[_TAIL], add_special_tokens=False))
        return {
            "tokenized_prompt": prefix + tail,
            _START: len(prefix),
            "sampling_params": {"max_tokens": 1, "prompt_logprobs": 0, "temperature": 0.0},
        }

    def postprocess(row: dict[str, Any]) -> dict[str, Any]:
        # Failed rows skip postprocess and come out whole: a successful one keeps the same keys, with its
        # log-probability dicts (keyed by token id, which Arrow cannot hold) reduced to their sum.
        ids = list(row.get("prompt_token_ids") or [])
        logprob = continuation_logprob(row.get("prompt_logprobs") or [], ids, int(row[_START]))
        return {
            **row,
            "prompt_logprobs": None,
            "logprobs": None,
            "logprob": logprob,
            "prompt_tokens": len(ids),
            "error": None if logprob is not None else "no log-probability for the continuation",
        }

    return build_processor(
        config,
        preprocess=preprocess,
        postprocess=postprocess,
        preprocess_map_kwargs=LIGHT,
        postprocess_map_kwargs=LIGHT,
    )


def _outcomes(batch: pa.Table) -> pa.Table:
    """Processor rows as (__row, __index, logprob, prompt_tokens, error); failed rows carry their error."""
    names = set(batch.column_names)
    count = batch.num_rows
    failures = batch["__inference_error__"].to_pylist() if "__inference_error__" in names else [""] * count
    logprobs = batch["logprob"].to_pylist() if "logprob" in names else [None] * count
    errors = batch["error"].to_pylist() if "error" in names else [None] * count
    return pa.table(
        {
            _ROW: batch[_ROW],
            _INDEX: batch[_INDEX],
            "logprob": pa.array(
                [None if f else v for f, v in zip(failures, logprobs, strict=True)], pa.float64()
            ),
            "prompt_tokens": pa.array(
                batch["prompt_tokens"].to_pylist() if "prompt_tokens" in names else [0] * count, pa.int64()
            ),
            "error": pa.array(
                [str(f)[:300] if f else e for f, e in zip(failures, errors, strict=True)], pa.string()
            ),
        }
    )


def _collect(group: pa.Table) -> pa.Table:
    """The scores of one tagged row (a ``map_groups`` group), in request order."""
    items = sorted(group.to_pylist(), key=lambda item: item[_INDEX])
    return pa.table(
        {
            _ROW: pa.array([items[0][_ROW]] if items else [], pa.string()),
            "__scores": pa.array([[i["logprob"] for i in items]] if items else [], pa.list_(pa.float64())),
            "__errors": pa.array([[i["error"] for i in items]] if items else [], pa.list_(pa.string())),
            "__prompt": pa.array([sum(i["prompt_tokens"] or 0 for i in items)] if items else [], pa.int64()),
        }
    )


def _join_scores(batch: pa.Table, step: str) -> pa.Table:
    """Joined rows as the step's columns (every prompt token computed: the processor reads no cache)."""
    count = batch.num_rows

    def column(name: str, default: Any) -> list[Any]:
        values = batch[name].to_pylist() if name in batch.column_names else [None] * count
        return [(list(default) if isinstance(default, list) else default) if v is None else v for v in values]

    prompt = column("__prompt", 0)
    outputs = {
        f"{step}_scores": column("__scores", []),
        f"{step}_errors": column("__errors", []),
        f"{step}_prompt_tokens": prompt,
        f"{step}_computed_tokens": prompt,
    }
    helper = {"__scores", "__errors", "__prompt", _ROW, f"{step}_requests"}
    table = batch.drop_columns([c for c in batch.column_names if c in helper])
    for name, kind in score_columns(step).items():
        table = table.append_column(name, pa.array(outputs[name], kind))
    return table
