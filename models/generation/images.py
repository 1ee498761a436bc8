"""Text-to-image generation with a diffusers pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from PIL import Image

from models.tiny import resolve_model_source

if TYPE_CHECKING:
    from models.config import GenerationConfig


class ImageGenerator:
    """A Stable Diffusion family pipeline on one device that turns prompts into images, seeded."""

    def __init__(
        self,
        source: str,
        device: str = "cpu",
        dtype: str = "float32",
        steps: int = 25,
        height: int = 512,
        width: int = 512,
        guidance_scale: float = 7.5,
    ):
        from diffusers import AutoPipelineForText2Image

        self.pipeline = AutoPipelineForText2Image.from_pretrained(
            resolve_model_source(source), torch_dtype=getattr(torch, dtype)
        ).to(device)
        self.pipeline.set_progress_bar_config(disable=True)
        self.device = device
        self.steps, self.height, self.width, self.guidance_scale = steps, height, width, guidance_scale

    @classmethod
    def from_config(cls, generation: GenerationConfig) -> ImageGenerator:
        """The generator a config's ``generation`` section names (model, device, dtype, steps, size)."""
        return cls(
            generation.image_model,
            device=generation.device,
            dtype=generation.dtype,
            steps=generation.image_steps,
            height=generation.image_size,
            width=generation.image_size,
            guidance_scale=generation.guidance_scale,
        )

    def generate(self, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        """One image per (prompt, seed); batch neighbours change an image only by float rounding."""
        generators = [torch.Generator(self.device).manual_seed(seed) for seed in seeds]
        result = self.pipeline(
            prompts,
            num_inference_steps=self.steps,
            height=self.height,
            width=self.width,
            guidance_scale=self.guidance_scale,
            generator=generators,
        )
        return list(result.images)
