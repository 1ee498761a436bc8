"""Sampling parameters and OpenAI chat request bodies of an LLM role (Serve and HTTP backends share them)."""

from __future__ import annotations

from typing import Any

from models.llm.config import LLMRoleConfig


def sampling_params(role: LLMRoleConfig, seed: int) -> dict[str, Any]:
    """max_tokens, temperature and (where the engine supports it) the seed of a role's requests."""
    sampling: dict[str, Any] = {"max_tokens": role.max_tokens, "temperature": role.temperature}
    if role.top_p < 1:
        sampling["top_p"] = role.top_p
    if role.repetition_penalty != 1:  # a vLLM extension of the OpenAI request; sent only when set
        sampling["repetition_penalty"] = role.repetition_penalty
    # vLLM's CPU sampler fails on per-request seeds ("CPU Generator does not use offset") and kills the
    # engine, so seeds are sent only to GPU engines and HTTP endpoints.
    if role.accelerator_type is not None or role.backend == "http":
        sampling["seed"] = seed
    return sampling


def structured_chat_request(
    role: LLMRoleConfig, messages: list[dict[str, Any]], schema: dict[str, Any] | str, seed: int
) -> dict[str, Any]:
    """A non-streaming chat completion body for vLLM's OpenAI server whose answer must follow ``schema``.

    ``schema`` may be JSON text: rows of a Ray Data pass must carry it so, since Arrow would turn a nested
    schema into structs with null-filled keys.
    """
    return dict(
        model=role.served_model_id,
        messages=messages,
        stream=False,
        structured_outputs={"json": schema},
        **sampling_params(role, seed),
    )
