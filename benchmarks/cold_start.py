"""Cold start on MovieLens: profiles from 0, 1 or 2 items against most popular and the warm profile (1:99).

The pipeline runs up to ``profiles`` on MovieLens latest-small with SmolLM2-135M-Instruct as profiler and as
the namer of the catalogue's taste clusters (item cards are titles, genres and tags). The same test users are
then profiled again as cold-start users, their history cut to their h most recent train items (h = 0, 1, 2):
the h items with the catalogue's curated default (the pipeline's cold-start path), and for h = 0 also with
their answers to the clarifying questions, simulated as the choice whose cluster holds most of their recent
items. Every profile ranks the user's 100 test candidates by MiniLM cosine between the profile and the item
cards (an LLM ranking of 100 candidates takes ~17 s of SmolLM2 per user here); Recall and NDCG@10/20 with
95% bootstrap intervals, on the same users and candidates for every row.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import RESULTS_DIR, BenchResult
from benchmarks.profiling_quality import SMOLLM2, most_popular_ranks, overrides, random_metrics
from models.evaluation import metrics_with_ci, ranks_from_scores

USERS, QUICK_USERS = 200, 40
HISTORY_LENGTHS = (0, 1, 2)
LABELLER = "{temperature: 0.0, max_tokens: 32, max_retries: 2}"


def simulated_answers(catalogue: Any, items: list[str], cluster_of: dict[str, int]) -> list[tuple[str, str]]:
    """Per question, the choice whose cluster holds most of ``items`` (a question none fits is skipped)."""
    index = {cluster.label: cluster_of[cluster.items[0]] for cluster in catalogue.clusters}
    answers = []
    for question in catalogue.questions():
        counts = [sum(cluster_of.get(i) == index[choice] for i in items) for choice in question["choices"]]
        if max(counts) > 0:
            answers.append((question["id"], question["choices"][int(np.argmax(counts))]))
    return answers


def cold_profiles(
    run_dir: Path, users: pa.Table, config: Any, catalogue: Any, cluster_of: dict[str, int]
) -> dict[str, pa.Table]:
    """Per condition: user_id, profile text and error of the users profiled again from few items."""
    from jobs.profiles import profile_users
    from runtime.artifacts import cards_ref, facts_ref

    cards = cards_ref(run_dir / "captions")
    facts = facts_ref(run_dir / "cohort", run_dir / "catalogue")
    folder = Path(tempfile.mkdtemp(prefix="cold-start-", dir=run_dir))
    histories = users["history"].to_pylist()
    conditions: dict[str, tuple[pa.Table, list[str] | None]] = {}
    for h in HISTORY_LENGTHS:
        cut = pa.table({"user_id": users["user_id"], "history": [items[:h] for items in histories]})
        conditions[f"{h} items + default"] = (cut, catalogue.default())
    answered = []
    for items in histories:
        chosen = catalogue.answered(simulated_answers(catalogue, items, cluster_of))
        answered.append([item for cluster in chosen for item in cluster.items] or None)
    defaults = [item for cluster in catalogue.default_clusters() for item in cluster.items]
    extra = [items if items is not None else defaults for items in answered]
    empty: list[list[str]] = [[] for _ in histories]
    answers = pa.table({"user_id": users["user_id"], "history": empty, "cf_items": extra})
    conditions["0 items + answers"] = (answers, None)
    profiles: dict[str, pa.Table] = {}
    for name, (table, default) in conditions.items():
        source, written = folder / f"{len(profiles)}-in.parquet", folder / f"{len(profiles)}-out"
        pq.write_table(table, source)
        profile_users(str(source), cards, facts, default, config).write_parquet(str(written))
        profiles[name] = pq.read_table(written, columns=["user_id", "text", "error"])
    return profiles


class CandidateScorer:
    """MiniLM cosine between a user's vector and their candidates' cards (card vectors kept)."""

    def __init__(self, cards: dict[str, str]):
        from models.embedding import CardVectors, TextEmbedder

        self.embedder = TextEmbedder()
        self.items = CardVectors(self.embedder, cards)

    def ranks(self, user_vectors: np.ndarray, candidates: list[list[str]]) -> np.ndarray:
        """0-based test ranks (positive first in each candidate list)."""
        items = np.stack([self.items(row) for row in candidates])
        return ranks_from_scores(np.einsum("ud,ucd->uc", user_vectors, items))

    def profile_ranks(
        self, profiles: pa.Table, order: list[str], candidates: list[list[str]]
    ) -> tuple[np.ndarray, int]:
        """Ranks of profile texts in ``order`` (a failed profile ranks its positive last) and the failures."""
        rows = {row["user_id"]: row for row in profiles.to_pylist()}
        texts = [rows[user]["text"] or "" for user in order]
        failed = np.array([rows[user]["error"] is not None or not rows[user]["text"] for user in order])
        ranks = self.ranks(self.embedder.embed([t or "-" for t in texts]), candidates)
        return np.where(failed, len(candidates[0]) - 1, ranks), int(failed.sum())


def run(quick: bool = False) -> BenchResult:
    """The pipeline up to profiles with SmolLM2, cold-start profiles, and every ranker on the same users."""
    from jobs.pipeline import run_pipeline
    from models.config import load_config
    from models.profiling.catalogue import Catalogue
    from runtime.artifacts import CATALOGUE_CLUSTERS, CATALOGUE_ITEMS

    result = BenchResult("cold_start")
    users_wanted = QUICK_USERS if quick else USERS
    run_dir = Path(tempfile.mkdtemp(prefix="cold-start-"))
    role = f"model_source: '{SMOLLM2}', backend: serve, max_model_len: 4096, kv_cache_gb: 2.0"
    settings = [*overrides(users_wanted), f"llm.summarizer={{{role}, {LABELLER[1:-1]}}}"]
    config = load_config(None, settings)
    start = time.perf_counter()
    pipeline = run_pipeline(run_dir, config, until="profiles")
    pipeline_seconds = time.perf_counter() - start
    warm = pq.read_table(run_dir / "profiles" / "profile_v0.parquet")
    order = warm["user_id"].to_pylist()
    candidates = warm["test_candidates"].to_pylist()
    catalogue = Catalogue.read(run_dir / "catalogue" / CATALOGUE_CLUSTERS, config.coldstart)
    members = pq.read_table(run_dir / "catalogue" / CATALOGUE_ITEMS)
    cluster_of = dict(zip(members["item_id"].to_pylist(), members["cluster"].to_pylist(), strict=True))
    start = time.perf_counter()
    cold = cold_profiles(run_dir, warm, config, catalogue, cluster_of)
    cold_seconds = time.perf_counter() - start
    cards_table = pq.read_table(run_dir / "captions" / "items.parquet", columns=["item_id", "card"])
    scorer = CandidateScorer(
        dict(zip(*(cards_table[c].to_pylist() for c in ("item_id", "card")), strict=True))
    )

    result.add(ranker="random (analytic)", num_users=len(order), **random_metrics())
    rows: dict[str, tuple[np.ndarray, int]] = {
        "most popular": (most_popular_ranks(run_dir, warm, "test_candidates"), 0)
    }
    histories = warm["history"].to_pylist()
    for h in HISTORY_LENGTHS[1:]:
        vectors = np.stack([scorer.items(items[:h]).mean(axis=0) for items in histories])
        rows[f"{h} items, mean card (MiniLM)"] = (scorer.ranks(vectors, candidates), 0)
    for name, profiles in cold.items():
        rows[f"profile: {name}"] = scorer.profile_ranks(profiles, order, candidates)
    warm_profiles = warm.select(["user_id", "text", "error"])
    rows[f"profile: {config.profiling.history_items} items + CF (warm)"] = scorer.profile_ranks(
        warm_profiles, order, candidates
    )
    for name, (ranks, failed) in rows.items():
        result.add(ranker=name, failed=failed, **metrics_with_ci(ranks, seed=config.seed))
    popular = next(r for r in result.rows if r.get("ranker") == "most popular")
    for row in result.rows:
        if "ci95" in row:
            row["recall@20_vs_most_popular"] = row["recall@20"] / max(popular["recall@20"], 1e-9)
    result.notes.append(
        f"MovieLens latest-small, {len(order)} test users, 1 positive + 99 sampled negatives each, the same "
        f"candidates for every row; {SMOLLM2} profiles (greedy) and names the "
        f"{config.coldstart.clusters} taste clusters; profiles rank candidates by MiniLM cosine; a failed "
        "profile counts as a miss"
    )
    result.notes.append(
        f"catalogue questions: {[q['choices'] for q in catalogue.questions()]}; default: "
        f"{[c.split(' | ')[0] for c in catalogue.default()]}"
    )
    stages = {name: round(r.seconds, 1) for name, r in pipeline.results.items()}
    result.notes.append(
        f"pipeline {pipeline_seconds:.0f} s (stages {stages}); the {len(cold)} cold-start profile passes "
        f"{cold_seconds:.0f} s ({len(cold) * len(order) / cold_seconds:.2f} profiles/s)"
    )
    _plot(result)
    return result


def _plot(result: BenchResult) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in result.rows if "ranker" in row]
    names = [row["ranker"] for row in rows]
    fig, ax = plt.subplots(figsize=(11, 4.4))
    for offset, metric, colour in ((-0.2, "recall@20", "#3b7dd8"), (0.2, "ndcg@20", "#e07b39")):
        values = [row[metric] for row in rows]
        errors = [
            [row[metric] - row["ci95"][metric][0], row["ci95"][metric][1] - row[metric]]
            if "ci95" in row
            else [0.0, 0.0]
            for row in rows
        ]
        positions = np.arange(len(rows)) + offset
        ax.bar(positions, values, 0.4, yerr=np.array(errors).T, color=colour, capsize=3, label=metric)
    ax.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=7)
    ax.set_ylabel("test, 1:99 (95% intervals)")
    ax.set_title("cold start: profiles from few items vs most popular and the warm profile")
    ax.legend(fontsize=8)
    fig.tight_layout()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS_DIR / "cold_start.png", dpi=110)
    plt.close(fig)
