"""Image safety: diffusers' ``StableDiffusionSafetyChecker`` (a CLIP vision tower against concept vectors)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from models.tiny import resolve_model_source

# diffusers adds this to the concept scores of an image that already matched a "special care" concept.
SPECIAL_CARE_MARGIN = 0.01


class ImageSafetyChecker:
    """Flags unsafe images with a Stable Diffusion safety checker checkpoint (``tiny://safety`` in tests).

    ``sensitivity`` is diffusers' ``adjustment``: it is added to every concept score, so a higher value
    flags more images. The concept scores of a batch are computed at once (no loop over images).
    """

    def __init__(self, source: str, device: str = "cpu", sensitivity: float = 0.0):
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        path = resolve_model_source(source)
        self.model = StableDiffusionSafetyChecker.from_pretrained(path).to(device).eval()
        self.processor = CLIPImageProcessor.from_pretrained(path)
        self.device = device
        self.sensitivity = sensitivity

    @torch.inference_mode()
    def unsafe(self, images: list[Image.Image]) -> np.ndarray:
        """One flag per image: True where any concept score is above its threshold."""
        if not images:
            return np.zeros(0, dtype=bool)
        model = self.model
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        pooled = model.vision_model(pixels.to(model.dtype))[1]
        embeds = torch.nn.functional.normalize(model.visual_projection(pooled).float(), dim=-1)

        def scores(concepts: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
            cosine = embeds @ torch.nn.functional.normalize(concepts.float(), dim=-1).T
            return cosine - thresholds.float() + self.sensitivity

        special = (scores(model.special_care_embeds, model.special_care_embeds_weights) > 0).any(dim=1)
        concept = scores(model.concept_embeds, model.concept_embeds_weights)
        concept = concept + SPECIAL_CARE_MARGIN * special.unsqueeze(1)
        return (concept > 0).any(dim=1).cpu().numpy()
