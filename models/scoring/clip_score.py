"""CLIPScore: image-text agreement from a CLIP model (transformers' CLIPModel, OpenAI weights or tiny)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from models.tiny import resolve_model_source

CLIP_SCORE_WEIGHT = 2.5


class CLIPScorer:
    """Embeds images and texts with CLIP; CLIPScore = 2.5 * max(cosine, 0) per pair (Hessel et al., 2021)."""

    def __init__(self, source: str, device: str = "cpu"):
        from transformers import CLIPModel, CLIPProcessor

        path = resolve_model_source(source)
        self.model = CLIPModel.from_pretrained(path).to(device).eval()
        self.processor = CLIPProcessor.from_pretrained(path)
        self.device = device

    @torch.inference_mode()
    def embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        """Unit-norm image embeddings [N, d]."""
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        features = self.model.get_image_features(pixel_values=pixels)
        return torch.nn.functional.normalize(_as_tensor(features), dim=-1)

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings [N, d] (texts truncated to CLIP's 77 tokens)."""
        tokens = self.processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        features = self.model.get_text_features(**tokens.to(self.device))
        return torch.nn.functional.normalize(_as_tensor(features), dim=-1)

    def score(self, images: list[Image.Image], texts: list[str]) -> np.ndarray:
        """CLIPScore of each (image, text) pair, in [0, 2.5]."""
        cosine = (self.embed_images(images) * self.embed_texts(texts)).sum(-1)
        return (CLIP_SCORE_WEIGHT * cosine.clamp(min=0)).float().cpu().numpy()


def _as_tensor(features: object) -> torch.Tensor:
    """transformers 5 returns a model output from get_*_features; older versions a tensor."""
    if isinstance(features, torch.Tensor):
        return features
    return features.pooler_output  # type: ignore[attr-defined]
