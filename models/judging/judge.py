"""Blind LLM judging of posts: the requests (rubric prompts, retrieved facts) and their normalised scores."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image

from models.embedding import Embedder
from models.llm.prompts import JUDGE_FACTS, JUDGE_QUALITY
from models.media import VideoClip, png_data_url
from models.profiling.evidence import numbered_list

POST_CHARS = 700
HISTORY_CHARS = 1000
JUDGE_FRAMES_PER_CLIP = 2  # the judge sees a clip's first and last frames


@dataclass
class PostView:
    """What the judge and the metrics see of one post: text, images and clips, never the method behind it."""

    method: str
    user_id: str
    text: str
    images: list[Image.Image] = field(default_factory=list, repr=False)
    history_cards: list[str] = field(default_factory=list)
    target_card: str = ""
    videos: list[VideoClip] = field(default_factory=list, repr=False)

    def visuals(self, frames_per_clip: int) -> list[list[Image.Image]]:
        """Each image as one frame, then each clip as ``frames_per_clip`` evenly spaced frames."""
        return [[image] for image in self.images] + [clip.sample(frames_per_clip) for clip in self.videos]

    @property
    def key(self) -> str:
        """An opaque request key (the judge's prompt never contains the method)."""
        return hashlib.sha256(f"{self.method}|{self.user_id}".encode()).hexdigest()[:16]


class FactSource(Protocol):
    """Where hallucination checks get reference facts (the catalogue by default; search in production)."""

    def facts(self, texts: list[str]) -> list[list[str]]:
        """Reference facts for each text."""
        ...


class CatalogueFacts:
    """The ``top_k`` catalogue item cards closest to a text (MiniLM cosine)."""

    def __init__(
        self, cards: list[str], embedder: Embedder, top_k: int = 5, vectors: np.ndarray | None = None
    ):
        """``vectors``: the cards' embeddings by ``embedder``, precomputed (None: embedded here)."""
        self.cards, self.embedder, self.top_k = cards, embedder, top_k
        self.vectors = embedder.embed(cards) if vectors is None else vectors
        if len(self.vectors) != len(cards):
            raise ValueError(f"{len(self.vectors)} card vectors for {len(cards)} cards")

    def facts(self, texts: list[str]) -> list[list[str]]:
        """The closest cards to each text, best first."""
        scores = self.embedder.embed(texts) @ self.vectors.T
        best = np.argsort(-scores, axis=1, kind="stable")[:, : self.top_k]
        return [[self.cards[i] for i in row] for row in best]


def judge_requests(views: list[PostView], facts: list[list[str]], max_images: int) -> list[dict[str, Any]]:
    """Two requests per post (quality with its images and clip frames, facts); keys are opaque, order kept."""
    requests = []
    for view, evidence in zip(views, facts, strict=True):
        post = view.text[:POST_CHARS]
        images, note = _attachments(view, max_images)
        fields = {
            "history": numbered_list(view.history_cards, HISTORY_CHARS, 120),
            "post": post,
            "image_note": note,
        }
        requests.append(_request(f"{view.key}|quality", JUDGE_QUALITY, fields, images))
        fact_fields = {"facts": numbered_list(evidence, HISTORY_CHARS, 200), "post": post}
        requests.append(_request(f"{view.key}|facts", JUDGE_FACTS, fact_fields, None))
    return requests


def shows_images(request: dict[str, Any]) -> bool:
    """Whether a judge request carries images (a VLM must answer it)."""
    return any(isinstance(message["content"], list) for message in request["messages"])


def _attachments(view: PostView, max_images: int) -> tuple[list[str], str]:
    """Data URLs of the post's images, then its clips' frames, up to ``max_images``, and a note saying so."""
    frames = [(image, "image") for image in view.images] + [
        (frame, "video frame") for clip in view.videos for frame in clip.sample(JUDGE_FRAMES_PER_CLIP)
    ]
    attached = frames[:max_images]
    if not attached:
        return [], ""
    counts = Counter(kind for _, kind in attached)
    note = " and ".join(f"{count} {kind}(s)" for kind, count in counts.items())
    return [png_data_url(image, 448) for image, _ in attached], f" (its {note} are attached above)"


def _request(key: str, template: Any, fields: dict[str, Any], images: list[str] | None) -> dict[str, Any]:
    return {"row_key": key, "messages": template.messages(fields, images), "schema": template.schema}


def judged_scores(view: PostView, answers: dict[str, Any], visual_rated: bool) -> dict[str, float]:
    """Novelty and aesthetic in [0, 1] and hallucination in {0, 1}; NaN where the judge gave no answer."""
    quality = answers.get(f"{view.key}|quality")
    facts = answers.get(f"{view.key}|facts")
    scores = {"novelty": np.nan, "aesthetic": np.nan, "hallucination": np.nan}
    if quality is not None and quality.value:
        value = quality.value
        scores["novelty"] = (value["novelty"] - 1) / 4
        parts = [value["text_aesthetic"]] + ([value["visual_aesthetic"]] if visual_rated else [])
        scores["aesthetic"] = (float(np.mean(parts)) - 1) / 4
    if facts is not None and facts.value:
        scores["hallucination"] = float(facts.value["hallucination"])
    return scores
