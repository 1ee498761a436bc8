"""Serve deployments of the generation models: batched image and video diffusion, the CLIP + MiniLM scorer."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import numpy as np
from PIL import Image
from ray import serve

from models.config import DeploymentConfig, GenerationConfig
from models.embedding import TextEmbedder
from models.generation.diffusion import ImageGenerator, VideoGenerator
from models.media import VideoClip
from models.scoring.clip_score import CLIPScorer
from models.scoring.safety_checker import ImageSafetyChecker


def deployment_options(config: DeploymentConfig) -> dict[str, Any]:
    """``serve.deployment`` options: replica bounds (equal = fixed), resources, load shedding."""
    return {
        "max_ongoing_requests": config.max_ongoing_requests,
        "max_queued_requests": config.max_queued_requests,
        "backpressure_config": {"status_code": 503, "retry_after_s": config.retry_after_s},
        "ray_actor_options": {"num_cpus": config.num_cpus, "num_gpus": config.num_gpus},
        "autoscaling_config": {
            "min_replicas": config.replicas,
            "max_replicas": max(config.replicas, config.max_replicas or config.replicas),
            "target_ongoing_requests": config.target_ongoing_requests,
        },
    }


class DiffusionDeployment:
    """Text to image or video; concurrent requests are grouped by ``@serve.batch`` into one pipeline call."""

    def __init__(self, generation: GenerationConfig, medium: Literal["image", "video"]):
        generator = ImageGenerator if medium == "image" else VideoGenerator
        self.generator: ImageGenerator | VideoGenerator = generator.from_config(generation)

    def reconfigure(self, batching: dict[str, Any]) -> None:
        """Apply ``{"max_batch_size": int, "batch_wait_timeout_s": float}`` (the deployment's user_config)."""
        for method in (self.generate, self.generate_from):
            method.set_max_batch_size(int(batching["max_batch_size"]))
            method.set_batch_wait_timeout_s(float(batching["batch_wait_timeout_s"]))

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def generate(self, prompts: list[str], seeds: list[int]) -> list[Image.Image] | list[VideoClip]:
        """One image or clip per (prompt, seed); each call brings one pair, a batch renders them at once."""
        return await asyncio.to_thread(self.generator.generate, prompts, seeds)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def generate_from(
        self, prompts: list[str], seeds: list[int], references: list[Image.Image]
    ) -> list[Image.Image]:
        """Image to image: one image per (prompt, seed, reference), batched like ``generate``."""
        if not isinstance(self.generator, ImageGenerator):
            raise TypeError("reference images condition images only, not video clips")
        return await asyncio.to_thread(self.generator.generate, prompts, seeds, list(references))


class ScorerDeployment:
    """CLIPScore of image-text pairs and MiniLM text embeddings for cohesion reflection, and the image
    safety checker of the safety gate (when configured)."""

    def __init__(self, generation: GenerationConfig):
        self.clip = CLIPScorer(generation.clip_model, device=generation.device)
        self.embedder = TextEmbedder(device=generation.device)
        safety = generation.safety
        self.checker = (
            ImageSafetyChecker(safety.image_checker, generation.device, safety.image_sensitivity)
            if safety.image_checker is not None
            else None
        )

    def score(self, images: list[Image.Image], texts: list[str]) -> np.ndarray:
        """CLIPScore per (image, text) pair."""
        return self.clip.score(images, texts)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-norm text embeddings [N, d]."""
        return self.embedder.embed(texts)

    def unsafe(self, images: list[Image.Image]) -> np.ndarray:
        """One flag per image from the safety checker (this deployment is built with one when it is asked)."""
        if self.checker is None:
            raise RuntimeError("this scorer has no image safety checker (generation.safety.image_checker)")
        return self.checker.unsafe(images)
