"""CF test metrics over blocks of users in Ray Data actors: the driver adds the blocks' sums and never holds
per-user rows (``models.cf.evaluation``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq
import torch

from models.cf.evaluation import BlockEvaluator, EvalInputs, added, metrics_of
from models.cf.inputs import cf_inputs
from models.config import TailorMindConfig
from models.data import load_dataset
from models.vectors import embedding_matrix

EVAL_BLOCK = 4096  # users per evaluation block


class EvalActor:
    """A Ray Data actor: the item embeddings and every user's train and test rows (model state), and the
    metric sums of each block of users it is given."""

    def __init__(self, items: str, inputs: Any, seed: int, threads: int):
        import ray

        torch.set_num_threads(threads)
        data = ray.get(inputs) if isinstance(inputs, ray.ObjectRef) else inputs
        table = pq.read_table(items)
        self.users = pd.Index(data.user_ids.to_pandas())
        item_order = pa.compute.index_in(data.item_ids, value_set=table["item_id"])
        item_order = item_order.to_numpy(zero_copy_only=False, writable=True)
        item_emb = torch.as_tensor(embedding_matrix(table["embedding"]))[torch.as_tensor(item_order)]
        self.evaluate = BlockEvaluator(item_emb, data, seed)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """One row: the block's sums as JSON."""
        rows = self.users.get_indexer(batch["user_id"].to_numpy())
        sums = self.evaluate(rows, torch.as_tensor(embedding_matrix(batch["embedding"])))
        return pa.table({"sums": [json.dumps(sums)]})


def evaluate(embeddings: Path, data: str, config: TailorMindConfig) -> dict[str, Any]:
    """Test metrics of the exported embeddings and of most popular, over blocks of users in Ray Data
    actors; the driver adds the blocks' sums."""
    import ray
    import ray.data

    inputs = ray.remote(_eval_inputs).options(num_cpus=1).remote(data, config.seed)
    # Built before the actor starts: an actor waiting on it would hold its CPUs, and on a 2-CPU node the
    # task (and the Parquet reads) could then never be scheduled. The driver holds only the reference.
    ray.wait([inputs], fetch_local=False)
    users = ray.data.read_parquet(str((embeddings / "users.parquet").resolve()))
    threads = config.cf.cpus_per_worker
    spare = max(1, int(ray.cluster_resources().get("CPU", 1)) - 1)  # one CPU left for the reads
    sums = users.map_batches(
        EvalActor,
        fn_constructor_kwargs={
            "items": str((embeddings / "items.parquet").resolve()),
            "inputs": inputs,
            "seed": config.seed,
            "threads": threads,
        },
        batch_size=EVAL_BLOCK,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=min(threads, spare),
    )
    total = added(json.loads(row["sums"]) for row in sums.iter_rows())
    return {**metrics_of(total, "model"), "most_popular": metrics_of(total, "most_popular")}


def _eval_inputs(data: str, seed: int) -> EvalInputs:
    return EvalInputs.of(cf_inputs(load_dataset(data), seed=seed))
