"""Tiny offline models (chat LLM, VLM, Stable Diffusion, CLIP) and the ``tiny://NAME`` model sources."""

from models.tiny.registry import build_tiny_models, default_models_dir, resolve_model_source

__all__ = ["build_tiny_models", "default_models_dir", "resolve_model_source"]
