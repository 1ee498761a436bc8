"""The generation code's media and scoring interfaces over Serve deployment handles (from worker threads).

``PostWriter`` takes ``complete``, an image model, a scorer and an embedder; the batch job gives it
in-process models, the Serve app gives it these (and ``runtime.chat`` clients for the LLMs), so both paths
run the same ``models/`` code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from PIL import Image
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.handle import DeploymentHandle, DeploymentResponse

# A replica that died under a call: Serve brings up another, and a repeatable call can simply be made again.
REPLICA_LOST = (RayActorError, ActorUnavailableError)


def repeatable_result(call: Callable[[], DeploymentResponse], attempts: int = 3, wait_s: float = 2.0) -> Any:
    """The result of a deployment call that is safe to repeat, made again when its replica died under it."""
    for attempt in range(1, attempts + 1):
        try:
            return call().result()
        except REPLICA_LOST:
            if attempt == attempts:
                raise
            time.sleep(wait_s * attempt)
    raise AssertionError("unreachable")


@dataclass
class RemoteDiffusion:
    """A diffusion deployment (images or clips): one call per item, batched there by ``@serve.batch``."""

    handle: DeploymentHandle

    def generate(
        self, prompts: list[str], seeds: list[int], references: list[Image.Image | None] | None = None
    ) -> list[Any]:
        """One image or clip per (prompt, seed), an image drawn from its reference where one is given; a
        render lost with its replica is redone (same seed)."""
        calls = [
            partial(self.handle.generate.remote, prompt, seed)
            if reference is None
            else partial(self.handle.generate_from.remote, prompt, seed, reference)
            for prompt, seed, reference in zip(
                prompts, seeds, references or [None] * len(prompts), strict=True
            )
        ]
        responses = [call() for call in calls]
        results = []
        for response, call in zip(responses, calls, strict=True):
            try:
                results.append(response.result())
            except REPLICA_LOST:
                results.append(repeatable_result(call))
        return results


@dataclass
class RemoteScorer:
    """CLIPScore, text embeddings and image safety flags on the scorer deployment."""

    handle: DeploymentHandle

    def score(self, images: list[Image.Image], texts: list[str]) -> np.ndarray:
        """CLIPScore per (image, text) pair."""
        return repeatable_result(lambda: self.handle.score.remote(images, texts))

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-norm text embeddings [N, d]."""
        return repeatable_result(lambda: self.handle.embed.remote(texts))

    def unsafe(self, images: list[Image.Image]) -> np.ndarray:
        """One flag per image from the scorer's image safety checker."""
        return repeatable_result(lambda: self.handle.unsafe.remote(images))
