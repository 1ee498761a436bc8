"""What a CF fit leaves behind: the kept weights' embeddings as Parquet, and the summary of its training."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from models.cf.inputs import CFInputs
from models.cf.trainer import CFFit
from models.vectors import vector_column

ROWS_PER_GROUP = 65_536  # embeddings are written this many rows at a time


def write_embeddings(
    directory: Path, user_ids: pa.Array, item_ids: pa.Array, user_emb: torch.Tensor, item_emb: torch.Tensor
) -> None:
    """``users.parquet`` (user_id, embedding) and ``items.parquet`` (item_id, embedding): score(u, v) is
    their dot product."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, key, ids, emb in (
        ("users", "user_id", user_ids, user_emb),
        ("items", "item_id", item_ids, item_emb),
    ):
        matrix = emb.detach().cpu().float()
        schema = pa.schema([(key, pa.string()), ("embedding", pa.list_(pa.float32()))])
        with pq.ParquetWriter(directory / f"{name}.parquet", schema) as writer:
            for start in range(0, len(ids), ROWS_PER_GROUP):
                part = matrix[start : start + ROWS_PER_GROUP].numpy()
                writer.write_table(
                    pa.table({key: ids[start : start + len(part)], "embedding": vector_column(part)})
                )


def fit_summary(fit: CFFit, inputs: CFInputs, valid_most_popular: float, num_tags: int) -> dict[str, Any]:
    """``RUN/cf/metrics.json``'s training figures: the last and the kept epoch and step, what stopped it, the
    validation Recall@20 of the kept model and of most popular, the data's sizes, and warnings (the
    validation the dataset lacked; a kept model no better than most popular)."""
    last, kept = fit.curve[-1] if fit.curve else {}, fit.best_position
    best = fit.stopping.best
    warnings = []
    if inputs.validation != "given":
        drawn = "random" if inputs.validation == "held_out_random_train" else "latest"
        warnings.append(
            f"the dataset has no validation rows; early stopping uses one {drawn} train interaction per user "
            f"instead ({inputs.validation_users} users), which is left out of training"
        )
    if not inputs.validation_users:
        warnings.append("no user has a validation item: training ran to its cap and kept the last weights")
    if math.isfinite(best) and math.isfinite(valid_most_popular) and best <= valid_most_popular:
        warnings.append(
            f"the kept model's validation Recall@20 ({best:.4f}) is not above most popular's "
            f"({valid_most_popular:.4f}); its CF items are no better than the most popular items"
        )
    return {
        "epochs": int(last.get("epoch", 0)),
        "steps": int(last.get("step", 0)),
        "kept_epoch": int(kept["epoch"] - (kept["step_in_epoch"] == 0)),
        "kept_step": int(kept["steps"]),
        "stopped_by": last.get("reason"),
        "best_valid_recall@20": best if math.isfinite(best) else None,
        "valid_most_popular_recall@20": valid_most_popular if math.isfinite(valid_most_popular) else None,
        "validation": inputs.validation,
        "validation_users": inputs.validation_users,
        "trained_seconds": round(fit.trained_seconds, 3),
        "pairs_per_second": last.get("pairs_per_second"),
        "num_users": inputs.num_users,
        "num_items": inputs.num_items,
        "num_tags": num_tags,
        "warnings": warnings,
    }
