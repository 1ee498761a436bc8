"""One structured LLM pass over many requests with Ray Data's LLM processors, with bounded retries.

A request is ``{"row_key": str, "messages": [...OpenAI chat messages...], "schema": {...JSON schema...}}``.
Every answer is constrained by vLLM structured output to the schema, then parsed and checked; rows whose
answer failed (engine error, invalid JSON) are retried up to ``max_retries`` times and then reported failed,
never dropped and never fatal to the batch.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import ray

from models.llm.config import LLMRoleConfig
from models.llm.engine import engine_kwargs, placement
from models.llm.requests import sampling_params, structured_chat_request
from models.llm.structured import LLMAnswer, answer_with_retries
from models.tiny import resolve_model_source

log = logging.getLogger("tailormind.llm")

# The chat-template, tokenize, detokenize and HTTP actors mostly wait on the engine: a quarter CPU each.
_LIGHT_STAGE = {"num_cpus": 0.25}


def _build_processor(role: LLMRoleConfig, seed: int, serve_target: tuple[str, str] | None):
    from ray.data.llm import (
        HttpRequestProcessorConfig,
        ServeDeploymentProcessorConfig,
        build_processor,
        vLLMEngineProcessorConfig,
    )

    if role.backend == "vllm":
        config = vLLMEngineProcessorConfig(
            model_source=resolve_model_source(role.model_source),
            engine_kwargs=engine_kwargs(role),
            batch_size=role.batch_size,
            concurrency=role.num_engines,
            log_engine_metrics=False,
            should_continue_on_error=True,
            chat_template_stage=_LIGHT_STAGE,
            tokenize_stage=_LIGHT_STAGE,
            detokenize_stage=_LIGHT_STAGE,
            prepare_multimodal_stage={**_LIGHT_STAGE, "enabled": bool(role.max_images_per_prompt)},
            **placement(role),
        )

        def preprocess(row: dict) -> dict:
            sampling = sampling_params(role, seed)
            sampling["structured_outputs"] = {"json": row["schema"]}
            return {
                "row_key": row["row_key"],
                "messages": json.loads(row["messages"]),
                "sampling_params": sampling,
            }

        def postprocess(row: dict) -> dict:
            return {
                "row_key": row["row_key"],
                "text": row.get("generated_text"),
                "error": row.get("__inference_error__") or None,
            }

    elif role.backend == "serve":
        from ray.serve.llm.openai_api_models import ChatCompletionRequest

        assert serve_target is not None
        app_name, deployment_name = serve_target
        config = ServeDeploymentProcessorConfig(
            deployment_name=deployment_name,
            app_name=app_name,
            dtype_mapping={"ChatCompletionRequest": ChatCompletionRequest},
            batch_size=role.batch_size,
            concurrency=role.num_engines,
            should_continue_on_error=True,
        )

        def preprocess(row: dict) -> dict:
            request = structured_chat_request(role, json.loads(row["messages"]), row["schema"], seed)
            return {
                "row_key": row["row_key"],
                "method": "chat",
                "dtype": "ChatCompletionRequest",
                "request_kwargs": request,
            }

        def postprocess(row: dict) -> dict:
            choices = row.get("choices")
            text = choices[0]["message"]["content"] if choices is not None and len(choices) else None
            error = row.get("__inference_error__") or None
            if text is None and error is None:  # an error response (bad request, unknown model)
                error = str(row.get("error") or "a response without choices")[:300]
            return {"row_key": row["row_key"], "text": text, "error": error}

    else:
        if not role.base_url:
            from models.errors import TailorMindError

            raise TailorMindError(
                "an LLM role with backend 'http' needs base_url (an OpenAI-compatible /v1 URL)."
            )
        key = os.environ.get(role.api_key_env, "")
        config = HttpRequestProcessorConfig(
            url=role.base_url.rstrip("/") + "/chat/completions",
            headers={"Authorization": f"Bearer {key}"} if key else {},
            qps=role.requests_per_second,
            batch_size=role.batch_size,
            concurrency=role.num_engines,
            http_request_stage=_LIGHT_STAGE,  # it waits on the endpoint; a full CPU could starve the pass
        )

        def preprocess(row: dict) -> dict:
            schema = {"name": "answer", "schema": json.loads(row["schema"]), "strict": True}
            payload = dict(
                model=role.served_model_id,
                messages=json.loads(row["messages"]),
                response_format={"type": "json_schema", "json_schema": schema},
                **sampling_params(role, seed),
            )
            return {"row_key": row["row_key"], "payload": payload}

        def postprocess(row: dict) -> dict:
            response = row.get("http_response") or {}
            choices = response.get("choices") or []
            text = choices[0]["message"]["content"] if choices else None
            return {"row_key": row["row_key"], "text": text, "error": None if text else str(response)[:300]}

    return build_processor(
        config,
        preprocess=preprocess,
        postprocess=postprocess,
        preprocess_map_kwargs=_LIGHT_STAGE,
        postprocess_map_kwargs=_LIGHT_STAGE,
    )


def run_structured(
    requests: list[dict[str, Any]], role: LLMRoleConfig, *, seed: int = 0
) -> dict[str, LLMAnswer]:
    """Answer every request (row_key, messages, schema) with the role's LLM; returns answers by row_key."""
    serve_target = None
    if role.backend == "serve":
        from serve.llm import ensure_llm_deployment

        serve_target = ensure_llm_deployment(role)

    def attempt(pending: list[dict[str, Any]], number: int) -> dict[str, tuple[str | None, str | None]]:
        rows = [
            {
                "row_key": r["row_key"],
                "messages": json.dumps(r["messages"]),
                "schema": json.dumps(r["schema"]),
            }
            for r in pending
        ]
        processor = _build_processor(role, seed + number - 1, serve_target)
        return {
            row["row_key"]: (row["text"], row["error"])
            for row in processor(ray.data.from_items(rows)).take_all()
        }

    answers = answer_with_retries(requests, attempt, role.max_retries)
    failed = sum(1 for a in answers.values() if a.error)
    log.info(
        "LLM pass (%s, %s): %d requests, %d failed", role.backend, role.model_source, len(requests), failed
    )
    return answers
