"""Coherence (TailorBench): how well a post's images (or text) match the user's reference items (CLIP)."""

from __future__ import annotations

import numpy as np

from models.scoring.clip_score import CLIP_SCORE_WEIGHT


def reference_vector(reference_embeddings: np.ndarray) -> np.ndarray:
    """The unit-norm, equal-weighted mean of the reference items' caption embeddings [m, d] -> [d]."""
    mean = np.asarray(reference_embeddings, dtype=np.float64).mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def coherence(post_embeddings: np.ndarray, reference_embeddings: np.ndarray) -> float:
    """Mean CLIPScore, 2.5 * max(cos, 0), of each post embedding (image, or text) against the reference."""
    reference = reference_vector(reference_embeddings)
    post = np.asarray(post_embeddings, dtype=np.float64)
    post = post / np.maximum(np.linalg.norm(post, axis=1, keepdims=True), 1e-12)
    return float((CLIP_SCORE_WEIGHT * np.clip(post @ reference, 0.0, None)).mean())


def visual_coherence(visuals: list[np.ndarray], reference_embeddings: np.ndarray) -> float:
    """Mean coherence over a post's visuals: each one image [1, d] or one clip's frames [k, d]."""
    return float(np.mean([coherence(frames, reference_embeddings) for frames in visuals]))
