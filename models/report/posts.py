"""The report's view of the generated posts: totals over every user, folded block by block, and a seeded
sample of users whose posts the report shows in full (everyone else is reachable through the paged index).
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from models.generation.pages import image_file, video_file

SAMPLE_POSTS = 20
SCORE_BINS = np.linspace(0.0, 3.5, 15)  # combined score: mean CLIPScore / 2.5 plus relevance


def sample_key(user_id: str, seed: int) -> int:
    """A user's place in the seeded sample order (the smallest keys are sampled)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}/{user_id}".encode(), digest_size=8).digest(), "big")


@dataclass
class PostTotals:
    """Counts over every user's post summary row (``RUN/generate/posts.parquet``) and the sampled users."""

    sample_size: int = SAMPLE_POSTS
    seed: int = 0
    users: int = 0
    with_post: int = 0
    refused: int = 0
    versions: int = 0
    best_score_sum: float = 0.0
    degenerate: dict[str, int] = field(default_factory=dict)
    histogram: list[int] = field(default_factory=lambda: [0] * (len(SCORE_BINS) - 1))
    _sample: list[tuple[int, str, str]] = field(default_factory=list)  # (-key, user, page): a max-heap

    def add(self, batch: pa.Table) -> None:
        """Fold one block of summary rows in."""
        rows = batch.select(
            ["user_id", "page", "versions", "best_score", "refusal", "degenerate"]
        ).to_pylist()
        scores = [r["best_score"] for r in rows if r["best_score"] is not None]
        self.users += len(rows)
        self.with_post += len(scores)
        self.refused += sum(r["refusal"] is not None for r in rows)
        self.versions += sum(r["versions"] for r in rows)
        self.best_score_sum += float(sum(scores))
        counts, _ = np.histogram(np.clip(scores, SCORE_BINS[0], SCORE_BINS[-1]), SCORE_BINS)
        self.histogram = [a + int(b) for a, b in zip(self.histogram, counts, strict=True)]
        for row in rows:
            for label in set(row["degenerate"] or []) | ({"any"} if row["degenerate"] else set()):
                self.degenerate[label] = self.degenerate.get(label, 0) + 1
            entry = (-sample_key(row["user_id"], self.seed), row["user_id"], row["page"])
            if len(self._sample) < self.sample_size:
                heapq.heappush(self._sample, entry)
            elif entry > self._sample[0]:
                heapq.heapreplace(self._sample, entry)

    @property
    def failed(self) -> int:
        """Users without a post that the safety gate did not refuse (the writer failed)."""
        return self.users - self.with_post - self.refused

    @property
    def mean_best_score(self) -> float | None:
        """Mean combined score of the best versions."""
        return self.best_score_sum / self.with_post if self.with_post else None

    def sampled(self) -> list[tuple[str, str]]:
        """(user, page) of the sampled users, in sample order."""
        return [(user, page) for _, user, page in sorted(self._sample, reverse=True)]


@dataclass(frozen=True)
class PostSummary:
    """One sampled user's post: every version as ``post.json`` holds it, the best one's PNGs and WebMs."""

    user_id: str
    versions: list[dict[str, Any]]
    best: int
    images: list[tuple[bytes, str]]
    errors: list[str]
    videos: list[tuple[bytes, str]] = field(default_factory=list)
    refusal: str | None = None
    page: str = ""  # relative to the generate stage's folder

    @property
    def safety_flags(self) -> int:
        """Safety flags raised over all versions."""
        return sum(len(v.get("safety", {}).get("flags", [])) for v in self.versions)


def read_post(generate_dir: Path, page: str) -> PostSummary:
    """A post page's ``post.json`` beside it, with its best version's media."""
    folder = (generate_dir / page).parent
    post = json.loads((folder / "post.json").read_text())
    best = post["best_version"]
    version = post["versions"][best] if best >= 0 else {}
    images = _read_media(folder, image_file, version.get("image_prompts", []))
    videos = _read_media(folder, video_file, version.get("video_prompts", []))
    return PostSummary(
        post["user_id"],
        post["versions"],
        best,
        images,
        post.get("errors", []),
        videos,
        post.get("refusal"),
        page,
    )


def _read_media(folder: Path, name: Callable[[int], str], prompts: list[str]) -> list[tuple[bytes, str]]:
    files = [(folder / name(index), prompt) for index, prompt in enumerate(prompts)]
    return [(file.read_bytes(), prompt) for file, prompt in files if file.is_file()]
