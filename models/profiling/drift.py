"""Profile drift: how concentrated a profile is over the catalogue's taste clusters, against the history.

A history's spread is the entropy of its items' clusters; a text's (a profile of some round, a post) is the
entropy of the clusters of its ``nearest`` probe items (the clusters' most popular items) by MiniLM cosine.
Both count the same number of items and are divided by log(clusters): 0 means one taste, 1 all of them
equally. A profile whose spread falls below its history's, round after round, narrows the user's world.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from models.embedding import CardVectors

NEAREST = 10  # items counted on both sides: a history's most recent, a text's nearest probes
DEFINITION = (
    f"taste spread: entropy of the taste clusters of {NEAREST} items over log(clusters), 0 = one taste, "
    f"1 = all alike; a history counts its {NEAREST} most recent items, a profile or a post its {NEAREST} "
    "nearest probe items (the clusters' most popular items, by MiniLM cosine); round 0 is the initial profile"
)


def normalized_entropy(clusters: Sequence[int], k: int) -> float:
    """Entropy of the cluster histogram over log(k): 0 = one cluster, 1 = all k alike (NaN when empty)."""
    if not len(clusters):
        return float("nan")
    counts = np.bincount(np.asarray(clusters, dtype=np.int64), minlength=k)
    shares = counts[counts > 0] / counts.sum()
    return float(-(shares * np.log(shares)).sum() / np.log(k))


class TasteSpread:
    """Spread over taste clusters of item lists (their clusters) and of texts (their nearest probe items)."""

    def __init__(
        self,
        cards: CardVectors,
        cluster_of: Mapping[str, int],
        probe_items: Sequence[str],
        nearest: int = NEAREST,
    ):
        self.cards, self.cluster_of, self.nearest = cards, cluster_of, nearest
        self.k = max(cluster_of.values()) + 1
        self.probe = cards(probe_items)
        self.probe_clusters = np.array([cluster_of[i] for i in probe_items])

    def of_items(self, items: Sequence[str]) -> float:
        """Spread of the first ``nearest`` clustered items (items without train interactions are skipped)."""
        clusters = [self.cluster_of[i] for i in items if i in self.cluster_of][: self.nearest]
        return normalized_entropy(clusters, self.k)

    def of_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Spread of each text's ``nearest`` probe items (NaN for an empty text)."""
        if not texts:
            return np.array([], dtype=np.float64)
        vectors = self.cards.embedder.embed([t or "-" for t in texts])
        nearest = np.argsort(-(vectors @ self.probe.T), axis=1, kind="stable")[:, : self.nearest]
        spreads = [normalized_entropy(self.probe_clusters[row], self.k) for row in nearest]
        return np.where([bool(t) for t in texts], spreads, np.nan)
