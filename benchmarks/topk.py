"""Top-K scoring throughput: a per-user loop, the fp32 matmul roofline, Ray Data with 1 and 2 actors."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch

from benchmarks.common import RESULTS_DIR, BenchResult, bar_plot, best_of
from jobs.topk import USERS_PER_BLOCK, score
from models.config import load_config
from models.data.synth import SynthSpec, write_synthetic

K = 50


def _write_embeddings(path: Path, key: str, ids: pa.Array, values: np.ndarray) -> None:
    column = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
    pq.write_table(pa.table({key: ids, "embedding": column.cast(pa.list_(pa.float32()))}), path)


def run(quick: bool = False) -> BenchResult:
    """Users scored per second by each implementation on the same embeddings and seen items."""
    from models.cf.topk import seen_rows
    from models.data import load_dataset, write_dataset

    result = BenchResult("topk")
    users, items, dim = (20_000, 5_000, 64) if quick else (1_000_000, 100_000, 64)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        write_synthetic(SynthSpec(users=users, items=items, tags=100, seed=0), Path(tmp) / "src")
        write_dataset(load_dataset(Path(tmp) / "src"), run_dir / "data")
        seen = seen_rows(run_dir / "data")
        rng = np.random.default_rng(0)
        user_emb = rng.normal(size=(len(seen["user_ids"]), dim)).astype(np.float32)
        item_emb = rng.normal(size=(items, dim)).astype(np.float32)
        (run_dir / "cf" / "embeddings").mkdir(parents=True)
        item_ids = pa.array([f"i{j}" for j in range(items)])
        _write_embeddings(
            run_dir / "cf" / "embeddings" / "users.parquet", "user_id", seen["user_ids"], user_emb
        )
        _write_embeddings(run_dir / "cf" / "embeddings" / "items.parquet", "item_id", item_ids, item_emb)
        train = sp.csr_matrix(
            (np.ones(len(seen["indices"])), seen["indices"], seen["indptr"]), shape=(len(user_emb), items)
        )

        sample = 2000  # the per-user loop is timed on a sample and reported per user
        start = time.perf_counter()
        for u in range(sample):
            scores = item_emb @ user_emb[u]
            scores[train.indices[train.indptr[u] : train.indptr[u + 1]]] = -np.inf
            np.argsort(-scores)[:K]
        loop_rate = sample / (time.perf_counter() - start)
        result.add(method="numpy per-user loop", users_per_second=loop_rate, ratio=1.0)

        block = torch.from_numpy(user_emb[:USERS_PER_BLOCK])
        items_t = torch.from_numpy(item_emb)
        seconds = best_of(lambda: block @ items_t.T)
        flops = 2.0 * block.shape[0] * items * dim / seconds
        roofline = flops / (2.0 * items * dim)  # users/s if scoring were only the matmul
        result.add(
            method="fp32 matmul roofline (no masking, no top-k)",
            users_per_second=roofline,
            ratio=roofline / loop_rate,
            gflops=flops / 1e9,
        )

        config = load_config(None, ["ray.num_cpus=4"])
        for actors in (1, 2) if quick else (1,):  # at full scale one actor already uses every core
            start = time.perf_counter()
            score(run_dir, Path(tmp) / f"out{actors}", K, actors, config)
            rate = len(user_emb) / (time.perf_counter() - start)
            result.add(
                method=f"Ray Data, {actors} actor(s), end to end",
                users_per_second=rate,
                ratio=rate / loop_rate,
                fraction_of_roofline=rate / roofline,
            )
    labels = [row["method"] for row in result.rows]
    bar_plot(
        RESULTS_DIR / "topk.png",
        f"top-{K} scoring, {users} users x {items} items",
        labels,
        [row["ratio"] for row in result.rows],
        "speed vs per-user loop",
    )
    result.notes.append(
        "Ray Data figures include reading embeddings, the seen-item index and writing Parquet"
    )
    result.notes.append(f"{users} users x {items} items, d={dim}, K={K}; blocks of {USERS_PER_BLOCK} users")
    return result
