"""Tiny offline models (chat LLM, VLM, Stable Diffusion, CLIP, Wan video) and ``tiny://NAME`` sources."""

from models.tiny.registry import build_tiny_models, default_models_dir, resolve_model_source

__all__ = ["build_tiny_models", "default_models_dir", "resolve_model_source"]
