"""CF test metrics in Ray tasks over the parts of the dataset's interactions (each part holds every row of
its users): a task scores its part's users in blocks (``models.cf.evaluation``) and returns the sums, which
the driver adds; it never holds per-user rows, and no task holds more than a part and the item table."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from models.cf.evaluation import BlockEvaluator, EvalInputs, added, metrics_of
from models.cf.inputs import cf_inputs
from models.cf.ranking import popularity_scores
from models.config import TailorMindConfig
from models.data import load_dataset
from models.data.loader import interaction_parts
from models.vectors import embedding_matrix

EVAL_BLOCK = 4096  # users scored at once


def evaluate(embeddings: Path, data: str, config: TailorMindConfig) -> dict[str, Any]:
    """Test metrics of the exported embeddings and of most popular: first each part's train popularity
    (most popular ranks by the whole data's), then each part's sums; the driver adds both."""
    import ray

    threads = max(1, min(config.cf.cpus_per_worker, int(ray.cluster_resources().get("CPU", 1))))
    parts = interaction_parts(data)
    counting = ray.remote(_part_popularity).options(num_cpus=1)
    popularity = np.sum(ray.get([counting.remote(data, part, config.seed) for part in parts]), axis=0)
    scoring = ray.remote(_part_sums).options(num_cpus=threads)
    shared = ray.put(popularity)
    sums = ray.get(
        [
            scoring.remote(str(embeddings.resolve()), data, part, shared, config.seed, threads)
            for part in parts
        ]
    )
    total = added(sums)
    return {**metrics_of(total, "model"), "most_popular": metrics_of(total, "most_popular")}


def _part_popularity(data: str, part: str, seed: int) -> np.ndarray:
    """Users per item in one part's train split (after any held-out validation)."""
    return popularity_scores(cf_inputs(load_dataset(data, part=part), seed=seed).train)


def _part_sums(
    embeddings: str, data: str, part: str, popularity: np.ndarray, seed: int, threads: int
) -> dict[str, float]:
    """The metric sums of one part's users, scored in blocks of ``EVAL_BLOCK``."""
    torch.set_num_threads(threads)
    inputs = EvalInputs.of(cf_inputs(load_dataset(data, part=part), seed=seed))
    inputs = dataclasses.replace(inputs, popularity=popularity)
    items = pq.read_table(Path(embeddings) / "items.parquet")
    item_order = pc.index_in(inputs.item_ids, value_set=items["item_id"]).to_numpy(zero_copy_only=False)
    item_emb = torch.as_tensor(embedding_matrix(items["embedding"]))[torch.as_tensor(item_order)]
    wanted = pc.field("user_id").isin(inputs.user_ids)
    users = pq.read_table(Path(embeddings) / "users.parquet", filters=wanted)
    rows = pc.index_in(users["user_id"], value_set=inputs.user_ids).to_numpy(zero_copy_only=False)
    user_emb = embedding_matrix(users["embedding"])
    evaluate = BlockEvaluator(item_emb, inputs, seed)
    return added(
        evaluate(rows[start : start + EVAL_BLOCK], torch.as_tensor(user_emb[start : start + EVAL_BLOCK]))
        for start in range(0, len(rows), EVAL_BLOCK)
    )
