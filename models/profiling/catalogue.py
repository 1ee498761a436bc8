"""The catalogue as taste clusters, for users with little or no history.

Items are clustered by their CF embeddings (spherical k-means); each cluster keeps its most popular items and
is named once by the LLM. A cold-start user is asked a few clarifying questions whose choices are clusters;
their answers (else the curated default: the most popular items of the most popular clusters) join their
few items as profile evidence, until their own history is long enough.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.config import ColdStartConfig
from models.llm.prompts import CLUSTER_LABEL, cluster_label_schema
from models.profiling.evidence import numbered_list

QUESTION_TEXTS = (
    "Which of these would you pick first?",
    "And which of these appeals to you most?",
    "Which of these sounds most like you?",
    "Which of these would you rather try next?",
    "Last one: which of these do you enjoy most?",
)
LABEL_EVIDENCE_CHARS = 1200
CATALOGUE_COLUMNS = ("label", "popularity", "items", "cards")  # what a Catalogue reads of the stage's table
LABEL_TAGS = 4  # a name is one of a cluster's 4 most distinctive tags, or two of them


class AnswerError(ValueError):
    """Answers that do not match the catalogue's questions (the message says which and why)."""


def cluster_embeddings(embeddings: np.ndarray, k: int, seed: int, iterations: int = 30) -> np.ndarray:
    """The cluster of each row: spherical k-means (cosine) with k-means++ seeding."""
    if len(embeddings) < k:
        raise ValueError(f"{len(embeddings)} items cannot form {k} clusters: lower coldstart.clusters")
    import torch  # here, not at the top: the catalogue's light tasks only read and label

    x = torch.nn.functional.normalize(torch.as_tensor(np.asarray(embeddings), dtype=torch.float32), dim=1)
    generator = torch.Generator().manual_seed(seed)
    first = int(torch.randint(len(x), (1,), generator=generator))
    chosen = [first]
    distance = (1 - x @ x[first]).clamp_min(0)
    for _ in range(1, k):
        weights = distance if float(distance.sum()) > 0 else torch.ones_like(distance)
        pick = int(torch.multinomial(weights, 1, generator=generator))
        chosen.append(pick)
        distance = torch.minimum(distance, (1 - x @ x[pick]).clamp_min(0))
    centres = x[chosen].clone()
    labels = (x @ centres.T).argmax(dim=1)
    for _ in range(iterations):
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k)
        centres = torch.where((counts > 0)[:, None], torch.nn.functional.normalize(sums, dim=1), centres)
        updated = (x @ centres.T).argmax(dim=1)
        if torch.equal(updated, labels):
            break
        labels = updated
    return labels.numpy()


def by_popularity(clusters: np.ndarray, popularity: np.ndarray) -> np.ndarray:
    """Cluster ids renumbered by the clusters' total interactions: 0 is the most popular."""
    names, dense = np.unique(clusters, return_inverse=True)
    totals = np.bincount(dense, weights=popularity, minlength=len(names))
    rank = np.empty(len(names), dtype=np.int64)
    rank[np.argsort(-totals, kind="stable")] = np.arange(len(names))
    return rank[dense]


def cluster_table(
    item_ids: pa.Array, cards: pa.Array, popularity: np.ndarray, clusters: np.ndarray, top: int
) -> pa.Table:
    """One row per cluster (ids from ``by_popularity``): size, interactions, its ``top`` items and cards."""
    order = np.lexsort((-popularity, clusters))  # by cluster, most popular item first
    names, starts, sizes = np.unique(clusters[order], return_index=True, return_counts=True)
    totals = np.bincount(clusters, weights=popularity, minlength=len(names))
    kept = [order[start : start + min(top, size)] for start, size in zip(starts, sizes, strict=True)]
    offsets = pa.array(np.r_[0, np.cumsum([len(k) for k in kept])].astype(np.int32))
    flat = pa.array(np.concatenate(kept).astype(np.int64))
    return pa.table(
        {
            "cluster": pa.array(names, pa.int32()),
            "size": pa.array(sizes, pa.int64()),
            "popularity": pa.array(totals.astype(np.int64)),
            "items": pa.ListArray.from_arrays(offsets, item_ids.take(flat)),
            "cards": pa.ListArray.from_arrays(offsets, cards.take(flat)),
        }
    )


def distinctive_tags(
    tags: Sequence[Sequence[str]], clusters: np.ndarray, top: int = 5, support: float = 0.02
) -> list[list[str]]:
    """Per cluster (0..max): the ``top`` tags most over-represented among its items (lift: the tag's share in
    the cluster over its share in the catalogue), among tags on at least ``support`` of its items."""
    owners = np.repeat(clusters, [len(t) for t in tags])
    names, flat = np.unique(np.array([tag for t in tags for tag in t], dtype=object), return_inverse=True)
    sizes = np.bincount(clusters)
    counts = np.zeros((len(sizes), len(names)))
    np.add.at(counts, (owners, flat), 1.0)
    catalogue_share = np.bincount(flat, minlength=len(names)) / len(clusters)
    lift = counts / np.maximum(sizes, 1)[:, None] / np.maximum(catalogue_share, 1e-12)
    supported = counts >= np.maximum(1, np.ceil(support * sizes))[:, None]
    best = np.argsort(-np.where(supported, lift, -1.0), axis=1, kind="stable")[:, :top]
    return [[str(names[j]) for j in row if supported[c, j]] for c, row in enumerate(best)]


def label_request(key: str, cards: Sequence[str], tags: Sequence[str]) -> dict[str, Any]:
    """The request that names one cluster from its distinctive tags and most popular items."""
    fields = {"tags": ", ".join(tags) or "(none)", "items": numbered_list(cards, LABEL_EVIDENCE_CHARS)}
    schema = cluster_label_schema(list(tags[:LABEL_TAGS]))
    return {"row_key": key, "messages": CLUSTER_LABEL.messages(fields), "schema": schema}


def fallback_label(cards: Sequence[str]) -> str:
    """A cluster's name when the LLM gave none: its most popular item."""
    return f"Like {cards[0].split(' | ')[0][:32]}" if cards else "Popular picks"


@dataclass(frozen=True)
class TasteCluster:
    """A named group of similar items, with its most popular items (ids and cards)."""

    label: str
    popularity: int
    items: list[str]
    cards: list[str]


class Catalogue:
    """Taste clusters (most popular first): the questions cold start asks, and the evidence it assumes."""

    def __init__(self, clusters: Sequence[TasteCluster], settings: ColdStartConfig):
        needed = settings.num_questions * settings.choices_per_question
        if len(clusters) < needed:
            raise ValueError(
                f"the catalogue has {len(clusters)} clusters; {settings.num_questions} questions of "
                f"{settings.choices_per_question} choices need {needed}"
            )
        self.clusters = sorted(clusters, key=lambda c: -c.popularity)
        self.settings = settings

    @classmethod
    def read(cls, path: str | Path, settings: ColdStartConfig) -> Catalogue:
        """The catalogue stage's ``clusters.parquet`` (a file or folder, local or a pyarrow.fs URI)."""
        return cls.from_table(pq.read_table(str(path), columns=list(CATALOGUE_COLUMNS)), settings)

    @classmethod
    def from_table(cls, table: pa.Table, settings: ColdStartConfig) -> Catalogue:
        """The catalogue stage's clusters table (labels made unique)."""
        seen: dict[str, int] = {}
        clusters = []
        for row in table.select(list(CATALOGUE_COLUMNS)).to_pylist():
            seen[row["label"]] = seen.get(row["label"], 0) + 1
            label = row["label"] if seen[row["label"]] == 1 else f"{row['label']} ({seen[row['label']]})"
            clusters.append(TasteCluster(label, row["popularity"], row["items"], row["cards"]))
        return cls(clusters, settings)

    def _offered(self) -> list[list[TasteCluster]]:
        """Question q offers clusters q, q + Q, q + 2Q, ...: each mixes popular and niche tastes."""
        count = self.settings.num_questions
        return [
            self.clusters[q : q + count * self.settings.choices_per_question : count] for q in range(count)
        ]

    def questions(self) -> list[dict[str, Any]]:
        """The clarifying questions: ``{"id", "text", "choices"}``, each choice a cluster's label."""
        return [
            {"id": f"q{n + 1}", "text": QUESTION_TEXTS[n], "choices": [c.label for c in offered]}
            for n, offered in enumerate(self._offered())
        ]

    def answered(self, answers: Sequence[tuple[str, str]]) -> list[TasteCluster]:
        """The clusters chosen by ``(question_id, choice)`` answers; AnswerError names a bad answer."""
        offered = {f"q{n + 1}": clusters for n, clusters in enumerate(self._offered())}
        chosen, asked = [], set()
        for question, choice in answers:
            if question not in offered:
                raise AnswerError(f"no question {question!r}: the questions are {', '.join(offered)}")
            if question in asked:
                raise AnswerError(f"question {question!r} is answered twice")
            asked.add(question)
            match = [c for c in offered[question] if c.label == choice]
            if not match:
                labels = ", ".join(repr(c.label) for c in offered[question])
                raise AnswerError(f"{choice!r} is not a choice of question {question!r} ({labels})")
            chosen.append(match[0])
        return chosen

    def default_clusters(self) -> list[TasteCluster]:
        """The curated default: the most popular clusters, each cut to its most popular items."""
        per = self.settings.default_items_per_cluster
        return [
            TasteCluster(c.label, c.popularity, c.items[:per], c.cards[:per])
            for c in self.clusters[: self.settings.default_clusters]
        ]

    def default(self) -> list[str]:
        """The curated default's cards: the most popular items of the most popular clusters."""
        return [card for cluster in self.default_clusters() for card in cluster.cards]

    def evidence(self, history_items: int, answers: Sequence[tuple[str, str]] = ()) -> list[str]:
        """Cards added to a user's own items: their answered clusters' items; else the default while the
        history is shorter than ``min_history``."""
        if answers:
            return [card for cluster in self.answered(answers) for card in cluster.cards]
        return self.default() if history_items < self.settings.min_history else []
