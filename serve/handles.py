"""The generation code's model interfaces over Serve deployment handles (called from worker threads).

``PostWriter`` takes ``complete``, an image model, a scorer and an embedder; the batch job gives it
in-process models, the Serve app gives it these, so both paths run the same ``models/`` code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from ray.serve.handle import DeploymentHandle

from models.llm.config import LLMRoleConfig
from models.llm.requests import structured_chat_request
from models.llm.structured import LLMAnswer, answer_with_retries


@dataclass
class RemoteDiffusion:
    """A diffusion deployment (images or clips): one call per item, batched there by ``@serve.batch``."""

    handle: DeploymentHandle

    def generate(self, prompts: list[str], seeds: list[int]) -> list[Any]:
        """One image or clip per (prompt, seed)."""
        responses = [self.handle.generate.remote(p, s) for p, s in zip(prompts, seeds, strict=True)]
        return [response.result() for response in responses]


@dataclass
class RemoteScorer:
    """CLIPScore and text embeddings on the scorer deployment."""

    handle: DeploymentHandle

    def score(self, images: list[Image.Image], texts: list[str]) -> np.ndarray:
        """CLIPScore per (image, text) pair."""
        return self.handle.score.remote(images, texts).result()

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-norm text embeddings [N, d]."""
        return self.handle.embed.remote(texts).result()


@dataclass
class RemoteLLM:
    """``complete(requests, role)`` over ray.serve.llm deployments: structured output, bounded retries."""

    handles: dict[str, DeploymentHandle]  # by served model id
    roles: dict[str, LLMRoleConfig]
    seed: int = 0

    def __call__(self, requests: list[dict[str, Any]], role_name: str) -> dict[str, LLMAnswer]:
        """Answers by row_key; a request that fails every attempt carries its last error."""
        from ray.serve.llm.openai_api_models import ChatCompletionRequest

        role = self.roles[role_name]
        handle = self.handles[role.served_model_id].options(stream=True)

        def attempt(pending: list[dict[str, Any]], number: int) -> dict[str, tuple[str | None, str | None]]:
            streams = {
                r["row_key"]: handle.chat.remote(
                    ChatCompletionRequest(
                        **structured_chat_request(role, r["messages"], r["schema"], self.seed + number - 1)
                    ),
                    None,
                )
                for r in pending
            }
            return {key: _chat_text(stream) for key, stream in streams.items()}

        return answer_with_retries(requests, attempt, role.max_retries)


def _chat_text(stream: Any) -> tuple[str | None, str | None]:
    """(message text, error) of a non-streaming chat call: LLMServer yields one response or an error."""
    try:
        for response in stream:
            choices = getattr(response, "choices", None)
            if choices:
                return choices[0].message.content, None
            error = getattr(response, "error", None)
            return None, str(getattr(error, "message", error) or response)[:300]
    except Exception as exc:  # an engine failure is one failed attempt, never a crashed request
        return None, f"{type(exc).__name__}: {exc}"[:300]
    return None, "empty response stream"
