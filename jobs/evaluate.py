"""Stage ``eval``: TailorBench 1:99 reranking on the test split for each ranker, with 95% intervals.

Rankers: the LLM ranker with the initial and with the refined profile, the CF model's scores (when the
pipeline trained one), and MiniLM similarity between the refined profile and each candidate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.profiles import ProfilingInputs, profiling_inputs
from jobs.ray_cluster import connect
from jobs.refine import rank_with_profiles
from jobs.stage_runner import StageResult
from models.config import TailorMindConfig
from models.embedding import TextEmbedder
from models.evaluation import metrics_with_ci, ranks_from_scores

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

TEST_ROUND = 10_000  # shuffle seed offset of the test ranking, distinct from every refinement round


def cf_ranks(inputs: ProfilingInputs, embeddings: Path) -> np.ndarray:
    """Ranks of the test positives under the CF model's dot-product scores."""
    users = pq.read_table(embeddings / "users.parquet")
    items = pq.read_table(embeddings / "items.parquet")
    user_rows = pc.index_in(inputs.encoded.user_ids.take(inputs.cohort.users), value_set=users["user_id"])
    item_rows = pc.index_in(inputs.encoded.item_ids, value_set=items["item_id"]).to_numpy(
        zero_copy_only=False
    )
    user_emb = np.stack(users["embedding"].to_numpy(zero_copy_only=False))[
        user_rows.to_numpy(zero_copy_only=False)
    ]
    item_emb = np.stack(items["embedding"].to_numpy(zero_copy_only=False))[item_rows]
    candidates = inputs.cohort.test_candidates
    scores = np.einsum("ud,ucd->uc", user_emb, item_emb[candidates])
    return ranks_from_scores(scores)


def embedding_ranks(inputs: ProfilingInputs, profiles: dict[str, str], embedder: TextEmbedder) -> np.ndarray:
    """Ranks of the test positives by MiniLM cosine between the user's profile and each candidate's card.

    A user without a profile text is represented by the mean embedding of their history cards instead.
    """
    candidates = inputs.cohort.test_candidates
    needed = np.unique(np.concatenate([candidates.ravel(), *inputs.cohort.history]))
    vectors = embedder.embed([inputs.cards[i] for i in needed])
    row = {item: index for index, item in enumerate(needed.tolist())}
    texts = [profiles.get(user_id, "") for user_id in inputs.user_ids]
    profile_vectors = embedder.embed([t or "-" for t in texts])
    history_vectors = np.stack([vectors[[row[i] for i in h]].mean(axis=0) for h in inputs.cohort.history])
    users = np.where(np.array([bool(t) for t in texts])[:, None], profile_vectors, history_vectors)
    candidate_vectors = vectors[np.vectorize(row.get)(candidates)]
    return ranks_from_scores(np.einsum("ud,ucd->uc", users, candidate_vectors))


def llm_ranks(inputs: ProfilingInputs, profiles: dict[str, str], config: TailorMindConfig) -> np.ndarray:
    """Ranks of the test positives by the LLM ranker reading each user's profile."""
    ranks, _ = rank_with_profiles(inputs, profiles, inputs.cohort.test_candidates, config, TEST_ROUND)
    return np.array(
        [ranks.get(user_id, inputs.cohort.test_candidates.shape[1]) for user_id in inputs.user_ids]
    )


def evaluate_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``eval``: RUN/eval/metrics.json in the CONTRACT's format."""
    config = pipeline.config

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray)
        inputs = profiling_inputs(pipeline)
        refined = pq.read_table(pipeline.results["refine"].path / "profiles.parquet").to_pylist()
        refined_texts = {r["user_id"]: r["profile_refined"] for r in refined}
        ranks = {
            "profile_initial": llm_ranks(
                inputs, {r["user_id"]: r["profile_initial"] for r in refined}, config
            ),
            "profile_refined": llm_ranks(
                inputs, {r["user_id"]: r["profile_refined"] for r in refined}, config
            ),
            "embedding": embedding_ranks(inputs, refined_texts, TextEmbedder()),
        }
        if "cf" in pipeline.results:
            ranks["cf"] = cf_ranks(inputs, pipeline.results["cf"].path / "embeddings")
        rankers = {name: metrics_with_ci(r, seed=config.seed) for name, r in ranks.items()}
        metrics = {"rankers": rankers, "num_users": len(inputs.user_ids), "split": "test", "candidates": 100}
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return {name: {k: v for k, v in m.items() if k != "ci95"} for name, m in rankers.items()}

    section = {"ranker": config.llm.ranker, "profiling": config.profiling, "seed": config.seed}
    names = ("data", "captions", "refine", "cf")
    inputs = [pipeline.results[n].path for n in names if n in pipeline.results]
    return pipeline.runner.run("eval", build, config=section, inputs=inputs)
