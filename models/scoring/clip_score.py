"""CLIPScore: image-text agreement from a CLIP model (transformers' CLIPModel, or open_clip's models)."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from PIL import Image

from models.tiny import resolve_model_source

CLIP_SCORE_WEIGHT = 2.5
OPEN_CLIP_SCHEME = "open_clip:"


class CLIPEncoder(Protocol):
    """Raw (unnormalised) CLIP features of images and texts."""

    def image_features(self, images: list[Image.Image]) -> torch.Tensor:
        """[N, d] image features."""
        ...

    def text_features(self, texts: list[str]) -> torch.Tensor:
        """[N, d] text features."""
        ...


class CLIPScorer:
    """Embeds images and texts with CLIP; CLIPScore = 2.5 * max(cosine, 0) per pair (Hessel et al., 2021).

    ``source`` is a transformers CLIP checkpoint (``openai/clip-vit-base-patch32``, a path, ``tiny://clip``)
    or ``open_clip:ARCH[@PRETRAINED]`` (``open_clip:ViT-B-32@openai``, ``open_clip:hf-hub:laion/...``),
    which needs open_clip and so torchvision: GPU installs only.
    """

    def __init__(self, source: str, device: str = "cpu"):
        self.encoder: CLIPEncoder = (
            OpenCLIPEncoder(source.removeprefix(OPEN_CLIP_SCHEME), device)
            if source.startswith(OPEN_CLIP_SCHEME)
            else TransformersCLIPEncoder(resolve_model_source(source), device)
        )

    @torch.inference_mode()
    def embed_images(self, images: list[Image.Image]) -> torch.Tensor:
        """Unit-norm image embeddings [N, d]."""
        return torch.nn.functional.normalize(self.encoder.image_features(images).float(), dim=-1)

    @torch.inference_mode()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings [N, d] (texts truncated to CLIP's 77 tokens)."""
        return torch.nn.functional.normalize(self.encoder.text_features(texts).float(), dim=-1)

    def score(self, images: list[Image.Image], texts: list[str]) -> np.ndarray:
        """CLIPScore of each (image, text) pair, in [0, 2.5]."""
        cosine = (self.embed_images(images) * self.embed_texts(texts)).sum(-1)
        return (CLIP_SCORE_WEIGHT * cosine.clamp(min=0)).cpu().numpy()


class TransformersCLIPEncoder:
    """transformers' ``CLIPModel`` and ``CLIPProcessor`` (runs on the CPU install too)."""

    def __init__(self, path: str, device: str):
        from transformers import CLIPModel, CLIPProcessor

        self.model = CLIPModel.from_pretrained(path).to(device).eval()
        self.processor = CLIPProcessor.from_pretrained(path)
        self.device = device

    def image_features(self, images: list[Image.Image]) -> torch.Tensor:
        """[N, d] projected image features."""
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        return _as_tensor(self.model.get_image_features(pixel_values=pixels))

    def text_features(self, texts: list[str]) -> torch.Tensor:
        """[N, d] projected text features."""
        tokens = self.processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return _as_tensor(self.model.get_text_features(**tokens.to(self.device)))


class OpenCLIPEncoder:
    """An open_clip model ``ARCH[@PRETRAINED]``; without ``@``, random weights or an ``hf-hub:`` id's."""

    def __init__(self, name: str, device: str):
        import open_clip

        architecture, _, pretrained = name.partition("@")
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(
            architecture, pretrained=pretrained or None, device=device
        )
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(architecture)
        self.device = device

    def image_features(self, images: list[Image.Image]) -> torch.Tensor:
        """[N, d] image features."""
        pixels = torch.stack([self.preprocess(image.convert("RGB")) for image in images])
        return self.model.encode_image(pixels.to(self.device))

    def text_features(self, texts: list[str]) -> torch.Tensor:
        """[N, d] text features."""
        return self.model.encode_text(self.tokenizer(texts).to(self.device))


def _as_tensor(features: object) -> torch.Tensor:
    """transformers 5 returns a model output from get_*_features; older versions a tensor."""
    if isinstance(features, torch.Tensor):
        return features
    return features.pooler_output  # type: ignore[attr-defined]
