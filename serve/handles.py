"""The generation code's media and scoring interfaces over Serve deployment handles (from worker threads).

``PostWriter`` takes ``complete``, an image model, a scorer and an embedder; the batch job gives it
in-process models, the Serve app gives it these (and ``runtime.chat`` clients for the LLMs), so both paths
run the same ``models/`` code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from ray.serve.handle import DeploymentHandle


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
