"""Structured LLM steps over Ray Data: each row asks zero or more questions; the answers land in that row.

A step named ``S`` reads the column ``S_requests`` (a list of JSON texts ``{"messages": [...], "schema":
{...}}``; an empty list asks nothing) and replaces it with ``S_answers`` (the parsed JSON values as JSON
text, null where the request failed), ``S_errors``, ``S_attempts`` and the row's ``S_prompt_tokens``,
``S_generated_tokens`` and ``S_cached_tokens`` (the prompt tokens vLLM's prefix cache served, as the Serve
deployment reports them; null on the ``vllm`` backend, whose processor does not). Every other column passes
through, so steps chain: ``update(gradient(rank(ds)))``.

Backends (``LLMRoleConfig.backend``):

- ``serve`` and ``http``: a ``map_batches`` task sends its batch's requests concurrently to the role's Serve
  deployment (``runtime.chat``, the client the Serve ingress uses too) or OpenAI endpoint and retries bad
  answers in place. Tasks reuse Ray's worker processes, so a step adds well under a second of fixed cost.
- ``vllm``: ``ray.data.llm``'s vLLM processor, an engine inside the job for the step. A processor sends every
  row it gets, so the step sends it one row per request and joins the answers back; retries are passes
  over the failed requests (each pass starts its engine: use ``serve`` for multi-step stages).
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from models.llm.config import LLMRoleConfig
from models.llm.requests import sampling_params
from models.llm.rows import (
    _check_names,
    step_columns,
    with_answers,
)
from models.llm.structured import parse_structured

# Tasks that mostly wait on an engine or endpoint: a quarter CPU each.
LIGHT = {"num_cpus": 0.25}
_ROW, _INDEX, _REQUEST = "__row", "__index", "__request"
_PROMPT, _GENERATED = "__prompt_tokens", "__generated_tokens"  # sums over a request's attempts


def _client_step(batch: pa.Table, step: str, role_json: str, seed: int, api_key: str | None) -> pa.Table:
    """One batch of a serve/http step: every request of the batch at once, bad answers retried in place."""
    from runtime.chat import chat_client

    role = LLMRoleConfig.model_validate_json(role_json)
    requests = [
        {"row_key": f"{row}/{index}", **json.loads(text)}
        for row, asked in enumerate(batch[f"{step}_requests"].to_pylist())
        for index, text in enumerate(asked or [])
    ]
    answers = chat_client(role, api_key).answer(requests, seed) if requests else {}
    return with_answers(batch, step, answers)


class LLMStep:
    """One structured LLM step of a role over a Dataset (see the module docstring for the row contract).

    ``asks=False`` says that no row asks anything (the caller counted): the step adds its empty answer
    columns without starting the role's Serve deployment.
    """

    def __init__(self, step: str, role: LLMRoleConfig, seed: int, asks: bool = True):
        self.step, self.role, self.seed, self.asks = step, role, seed, asks

    def __call__(self, ds: Any) -> Any:
        """The lazy Dataset of ``ds`` with this step's answers (vllm: its requests are answered eagerly)."""
        import ray.data

        if self.role.backend == "vllm":
            return self._processor_step(ds)
        if self.role.backend == "serve" and self.asks:
            from runtime.llm import ensure_llm_deployment

            ensure_llm_deployment(self.role)
        # Blocks of one request batch each, so several tasks (batches) are in flight at once.
        in_flight = self.role.batches_in_flight * self.role.num_engines
        return ds.repartition(target_num_rows_per_block=self.role.batch_size).map_batches(
            _client_step,
            fn_kwargs={
                "step": self.step,
                "role_json": self.role.model_dump_json(),
                "seed": self.seed,
                # the job's key for an HTTP endpoint: workers do not have the driver's environment
                "api_key": os.environ.get(self.role.api_key_env) if self.role.backend == "http" else None,
            },
            batch_format="pyarrow",
            batch_size=self.role.batch_size,
            compute=ray.data.TaskPoolStrategy(size=in_flight),
            **LIGHT,
        )

    def _processor_step(self, ds: Any) -> Any:
        """Rows tagged, requests exploded to one row each, answered (with retry passes), joined back."""

        rows = ds.map_batches(_tag_rows, batch_format="pyarrow", **LIGHT).materialize()
        todo = rows.map_batches(
            _explode, fn_kwargs={"step": self.step}, batch_format="pyarrow", **LIGHT
        ).materialize()
        finished = []
        keep = {"batch_format": "pyarrow", **LIGHT}
        for attempt in range(1, self.role.max_retries + 2):
            if todo.count() == 0:
                break
            answered = (
                _processor(self.role, self.seed + attempt - 1)(todo)
                .map_batches(_parse_outputs, fn_kwargs={"attempt": attempt}, batch_format="pyarrow", **LIGHT)
                .materialize()
            )
            last = attempt == self.role.max_retries + 1
            finished.append(answered if last else answered.map_batches(_answered, **keep))
            todo = answered.map_batches(_unanswered, **keep).drop_columns(["text", "error", "attempts"])
        outcomes = None if not finished else finished[0].union(*finished[1:]) if finished[1:] else finished[0]
        return _rejoin(rows, outcomes, self.step, _collect, _join_answers)


def _rejoin(rows: Any, outcomes: Any | None, step: str, collect: Any, finish: Any) -> Any:
    """``rows`` (tagged) with the per-request ``outcomes`` grouped by row (``collect``) and joined back as
    the step's columns (``finish``); rows that asked nothing, or all of them when ``outcomes`` is None, get
    empty answers."""
    kwargs = {"fn_kwargs": {"step": step}, "batch_format": "pyarrow", **LIGHT}
    if outcomes is None:  # no row asked anything
        return rows.map_batches(finish, **kwargs)
    partitions = max(1, rows.num_blocks())  # the hash shuffles' width (Ray's default of 200 is for TBs)
    grouped = outcomes.groupby(_ROW, num_partitions=partitions).map_groups(collect, batch_format="pyarrow")
    joined = rows.join(grouped, "left_outer", num_partitions=partitions, on=(_ROW,))
    return joined.map_batches(finish, **kwargs)


def _answered(batch: pa.Table) -> pa.Table:
    """Rows with a valid answer (batch filters keep the column types; row filters re-infer them)."""
    return batch.filter(pc.is_null(batch["error"]))


def _unanswered(batch: pa.Table) -> pa.Table:
    """Rows whose answer failed."""
    return batch.filter(pc.is_valid(batch["error"]))


def _tag_rows(batch: pa.Table) -> pa.Table:
    """A unique ``__row`` id per row, to join the answers back."""
    return batch.append_column(_ROW, pa.array([uuid.uuid4().hex for _ in range(batch.num_rows)]))


def _explode(batch: pa.Table, step: str) -> pa.Table:
    """One row per request: (__row, __index, __request), with zero token counts so far."""
    asked = batch[f"{step}_requests"].to_pylist()
    rows = [
        (row_id, index, text)
        for row_id, requests in zip(batch[_ROW].to_pylist(), asked, strict=True)
        for index, text in enumerate(requests or [])
    ]
    return pa.table(
        {
            _ROW: pa.array([r[0] for r in rows], pa.string()),
            _INDEX: pa.array([r[1] for r in rows], pa.int32()),
            _REQUEST: pa.array([r[2] for r in rows], pa.string()),
            _PROMPT: pa.array([0] * len(rows), pa.int64()),
            _GENERATED: pa.array([0] * len(rows), pa.int64()),
        }
    )


def _processor(role: LLMRoleConfig, seed: int) -> Any:
    """A ray.data.llm vLLM processor for one pass that keeps every column it is given."""
    from ray.data.llm import build_processor

    from runtime.llm import engine_processor_config

    config = engine_processor_config(
        role,
        chat_template_stage=LIGHT,
        tokenize_stage=LIGHT,
        detokenize_stage=LIGHT,
        prepare_multimodal_stage={**LIGHT, "enabled": bool(role.max_images_per_prompt)},
    )

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        request = json.loads(row[_REQUEST])
        sampling = sampling_params(role, seed)
        sampling["structured_outputs"] = {"json": request["schema"]}
        return {"messages": request["messages"], "sampling_params": sampling}

    def postprocess(row: dict[str, Any]) -> dict[str, Any]:
        # Failed rows skip postprocess and come out whole; successful ones must have the same keys.
        return row

    return build_processor(
        config,
        preprocess=preprocess,
        postprocess=postprocess,
        preprocess_map_kwargs=LIGHT,
        postprocess_map_kwargs=LIGHT,
    )


def _parse_outputs(batch: pa.Table, attempt: int) -> pa.Table:
    """Processor rows reduced to (__row, __index, __request, text, error, attempts, token counts)."""
    names = set(batch.column_names)
    texts = batch["generated_text"].to_pylist() if "generated_text" in names else [None] * batch.num_rows
    failures = (
        batch["__inference_error__"].to_pylist() if "__inference_error__" in names else [""] * batch.num_rows
    )
    errors: list[str | None] = []
    for text, failure, request in zip(texts, failures, batch[_REQUEST].to_pylist(), strict=True):
        if failure:
            errors.append(str(failure)[:300])
        else:
            errors.append(parse_structured(text, json.loads(request)["schema"])[1])
    values = [
        json.dumps(json.loads(text, strict=False)) if error is None else None
        for text, error in zip(texts, errors, strict=True)
    ]
    prompt = _counts(batch, "num_input_tokens")
    generated = _counts(batch, "num_generated_tokens")
    return pa.table(
        {
            _ROW: batch[_ROW],
            _INDEX: batch[_INDEX],
            _REQUEST: batch[_REQUEST],
            "text": pa.array(values, pa.string()),
            "error": pa.array(errors, pa.string()),
            "attempts": pa.array([attempt] * batch.num_rows, pa.int32()),
            _PROMPT: pc.add(batch[_PROMPT], pa.array(prompt, pa.int64())),
            _GENERATED: pc.add(batch[_GENERATED], pa.array(generated, pa.int64())),
        }
    )


def _counts(batch: pa.Table, name: str) -> list[int]:
    if name not in batch.column_names:
        return [0] * batch.num_rows
    return [int(v or 0) for v in batch[name].to_pylist()]


def _collected(groups: list[tuple[str, list[dict[str, Any]]]]) -> pa.Table:
    """One row per tagged row: its answers, errors, attempts (by request index) and token sums."""
    ordered = [(row_id, sorted(items, key=lambda item: item[_INDEX])) for row_id, items in groups]

    def per_row(name: str, kind: pa.DataType) -> pa.Array:
        return pa.array([[i[name] for i in items] for _, items in ordered], pa.list_(kind))

    def summed(name: str) -> pa.Array:
        return pa.array([sum(i[name] for i in items) for _, items in ordered], pa.int64())

    return pa.table(
        {
            _ROW: pa.array([row_id for row_id, _ in ordered], pa.string()),
            "__answers": per_row("text", pa.string()),
            "__errors": per_row("error", pa.string()),
            "__attempts": per_row("attempts", pa.int32()),
            _PROMPT: summed(_PROMPT),
            _GENERATED: summed(_GENERATED),
        }
    )


def _collect(group: pa.Table) -> pa.Table:
    """The answers of one tagged row (a ``map_groups`` group), in request order."""
    items = group.to_pylist()
    return _collected([(items[0][_ROW], items)] if items else [])


def _join_answers(batch: pa.Table, step: str) -> pa.Table:
    """Joined rows as the step's output columns; rows that asked nothing get empty lists."""
    count = batch.num_rows

    def column(name: str, default: Any) -> list[Any]:
        values = batch[name].to_pylist() if name in batch.column_names else [None] * count
        return [(list(default) if isinstance(default, list) else default) if v is None else v for v in values]

    outputs = {
        f"{step}_answers": column("__answers", []),
        f"{step}_errors": column("__errors", []),
        f"{step}_attempts": column("__attempts", []),
        f"{step}_prompt_tokens": column(_PROMPT, 0),
        f"{step}_generated_tokens": column(_GENERATED, 0),
        f"{step}_cached_tokens": [None] * count,  # the processor does not report prefix-cache hits
    }
    _check_names(batch, step)
    helper = {"__answers", "__errors", "__attempts", _PROMPT, _GENERATED, _ROW, f"{step}_requests"}
    table = batch.drop_columns([c for c in batch.column_names if c in helper])
    for name, kind in step_columns(step).items():
        table = table.append_column(name, pa.array(outputs[name], kind))
    return table
