"""Seeded text-to-image and text-to-video generation with diffusers pipelines."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from models.media import VideoClip
from models.tiny import resolve_model_source

if TYPE_CHECKING:
    from models.config import GenerationConfig


class DiffusionGenerator:
    """A diffusers pipeline on one device with fixed sampling settings, called with per-item seeds."""

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
        self.pipeline = self._load(resolve_model_source(source), getattr(torch, dtype)).to(device)
        self.pipeline.set_progress_bar_config(disable=True)
        self.device = device
        self.steps, self.height, self.width, self.guidance_scale = steps, height, width, guidance_scale

    @staticmethod
    def _load(path: str, dtype: torch.dtype) -> Any:
        """The pipeline at ``path`` (the class its ``model_index.json`` names)."""
        from diffusers import DiffusionPipeline

        return DiffusionPipeline.from_pretrained(path, dtype=dtype)

    def _sample(self, prompts: list[str], seeds: list[int], **options: Any) -> Any:
        """One pipeline call over every prompt, each with its own seeded generator."""
        generators = [torch.Generator(self.device).manual_seed(seed) for seed in seeds]
        return self.pipeline(
            prompts,
            num_inference_steps=self.steps,
            height=self.height,
            width=self.width,
            guidance_scale=self.guidance_scale,
            generator=generators,
            **options,
        )


class ImageGenerator(DiffusionGenerator):
    """Text to image with a Stable Diffusion family pipeline (SD, SDXL, FLUX); image to image from a
    reference with the same weights (``reference_strength``: how far the image may move from it)."""

    reference_strength = 0.6
    _from_reference: Any = None

    @staticmethod
    def _load(path: str, dtype: torch.dtype) -> Any:
        """The text-to-image pipeline of the checkpoint at ``path``."""
        from diffusers import AutoPipelineForText2Image

        return AutoPipelineForText2Image.from_pretrained(path, dtype=dtype)

    @classmethod
    def from_config(cls, generation: GenerationConfig) -> ImageGenerator:
        """The generator a config's ``generation`` section names (model, device, dtype, steps, size)."""
        generator = cls(
            generation.image_model,
            device=generation.device,
            dtype=generation.dtype,
            steps=generation.image_steps,
            height=generation.image_size,
            width=generation.image_size,
            guidance_scale=generation.guidance_scale,
        )
        generator.reference_strength = generation.reference_strength
        return generator

    def generate(
        self, prompts: list[str], seeds: list[int], references: list[Image.Image | None] | None = None
    ) -> list[Image.Image]:
        """One image per (prompt, seed), drawn from its reference image where one is given; batch
        neighbours change an image only by float rounding."""
        guides = references or [None] * len(prompts)
        images: list[Image.Image | None] = [None] * len(prompts)
        plain = [i for i, guide in enumerate(guides) if guide is None]
        guided = [i for i, guide in enumerate(guides) if guide is not None]
        if plain:
            drawn = self._sample([prompts[i] for i in plain], [seeds[i] for i in plain]).images
            for index, image in zip(plain, drawn, strict=True):
                images[index] = image
        if guided:
            drawn = self._sample_from(
                [prompts[i] for i in guided], [seeds[i] for i in guided], [guides[i] for i in guided]
            )
            for index, image in zip(guided, drawn, strict=True):
                images[index] = image
        return [image for image in images if image is not None]

    def _sample_from(self, prompts: list[str], seeds: list[int], references: list[Any]) -> list[Image.Image]:
        """Image to image: one pipeline call over every (prompt, seed, reference), sharing the weights."""
        from diffusers import AutoPipelineForImage2Image

        if self._from_reference is None:
            self._from_reference = AutoPipelineForImage2Image.from_pipe(self.pipeline)
            self._from_reference.set_progress_bar_config(disable=True)
        size = (self.width, self.height)
        return list(
            self._from_reference(
                prompts,
                image=[reference.convert("RGB").resize(size) for reference in references],
                strength=self.reference_strength,
                num_inference_steps=self.steps,
                guidance_scale=self.guidance_scale,
                generator=[torch.Generator(self.device).manual_seed(seed) for seed in seeds],
            ).images
        )


class VideoGenerator(DiffusionGenerator):
    """Text to video with a diffusers video pipeline (Wan, CogVideoX, LTX-Video, ...)."""

    def __init__(self, source: str, frames: int = 17, fps: float = 8.0, **settings: Any):
        super().__init__(source, **settings)
        self.frames, self.fps = frames, fps

    @classmethod
    def from_config(cls, generation: GenerationConfig) -> VideoGenerator:
        """The generator of a config's ``generation.video`` section, on ``generation.device``."""
        video = generation.video
        return cls(
            video.model,
            frames=video.frames,
            fps=video.fps,
            device=generation.device,
            dtype=video.dtype,
            steps=video.steps,
            height=video.height,
            width=video.width,
            guidance_scale=video.guidance_scale,
        )

    def generate(self, prompts: list[str], seeds: list[int]) -> list[VideoClip]:
        """One clip per (prompt, seed), all sampled in one pipeline call."""
        result = self._sample(prompts, seeds, num_frames=self.frames, output_type="pil")
        return [VideoClip(list(frames), self.fps) for frames in result.frames]
