"""``tailormind score-topk --run RUN --k K``: each user's top-K unseen items on Ray Data, into RUN/topk/.

User embeddings stream through a stateful ``map_batches`` actor that holds the item embeddings (on the GPU
when there is one) and every user's seen items (all splits) as one CSR matrix: one matmul per block of
users (with as many threads as the actor has CPUs), seen items masked, ``topk``. Output rows are keyed by
``user_id`` so the profiling stage joins them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from jobs.pipeline import stage_main
from jobs.stage_runner import MARKER, StageResult, StageRunner
from models.cf.topk import UnseenTopK, seen_rows
from models.config import TailorMindConfig
from models.errors import TailorMindError
from models.vectors import embedding_matrix
from runtime.artifacts import parquet_rows
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

USERS_PER_BLOCK = 4096
log = logging.getLogger("tailormind.topk")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Run directory (with RUN/cf and RUN/data), K and the number of scoring actors."""
    parser.add_argument("--run", required=True, type=Path, help="run directory holding cf/ and data/")
    parser.add_argument("--k", type=int, help="items per user (default cf.topk)")
    parser.add_argument("--actors", type=int, default=1, help="scoring actors (one per GPU on GPU clusters)")
    parser.add_argument("--force", action="store_true", help="rescore even when RUN/topk is up to date")


class TopKScorer:
    """A Ray Data actor: the item embeddings (on the GPU when there is one) and every user's train row,
    and each block's top-K unseen items."""

    def __init__(self, items_path: str, seen: Any, k: int, use_gpu: bool = False, threads: int = 1):
        import ray

        torch.set_num_threads(max(1, min(threads, os.cpu_count() or 1)))  # its CPUs, at most this node's
        seen = ray.get(seen) if isinstance(seen, ray.ObjectRef) else seen  # shared once via the object store
        items = pq.read_table(items_path)
        device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        item_emb = torch.as_tensor(embedding_matrix(items["embedding"]), device=device)
        self.topk = UnseenTopK(items["item_id"].combine_chunks(), item_emb, seen, k)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """``user_id``, ``item_ids`` (best first) and ``scores`` for the users of one block."""
        user_ids = batch["user_id"].combine_chunks()
        return self.topk(user_ids, torch.as_tensor(embedding_matrix(batch["embedding"])))


def score(run_dir: Path, out: Path, k: int, actors: int, config: TailorMindConfig) -> dict[str, Any]:
    """Write RUN/topk/*.parquet with Ray Data and return the row count."""
    import ray

    connect(config.ray, run_dir)
    cpus = 1
    if not config.cf.use_gpu:  # leave a CPU for reading and writing, or the pipeline stalls
        usable = max(1, int(ray.available_resources().get("CPU", 1)) - 1)
        if actors > usable:
            log.warning("score-topk: %d actors need more CPUs than the cluster has; using %d", actors, usable)
            actors = usable
        cpus = usable // actors  # each actor's matmuls use its share of the cores
    # built by a task: the driver never holds the interactions (the actors read it from the object store)
    seen = ray.remote(seen_rows).options(num_cpus=1).remote(trained_on(run_dir))
    users = ray.data.read_parquet(str((run_dir / "cf" / "embeddings" / "users.parquet").resolve()))
    scored = users.map_batches(
        TopKScorer,
        fn_constructor_kwargs={
            "items_path": str((run_dir / "cf" / "embeddings" / "items.parquet").resolve()),
            "seen": seen,
            "k": k,
            "use_gpu": config.cf.use_gpu,
            "threads": cpus,
        },
        batch_size=USERS_PER_BLOCK,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus,
        num_gpus=1 if config.cf.use_gpu else 0,
    )
    scored.write_parquet(str(out.resolve()))
    return {"users": parquet_rows(out), "k": k}


def trained_on(run_dir: Path) -> Path:
    """The dataset RUN/cf was trained on: RUN/data in a pipeline run, else what train-cf --data named."""
    if (run_dir / "data" / "interactions.parquet").exists():
        return run_dir / "data"
    marker = run_dir / "cf" / MARKER
    if not marker.is_file():
        raise TailorMindError(f"{run_dir / 'cf'} holds no trained model; run tailormind train-cf first.")
    inputs = list(json.loads(marker.read_text())["inputs"])
    if len(inputs) != 1:
        raise TailorMindError(f"{marker} does not name the dataset the model was trained on; retrain it.")
    return Path(inputs[0])


def topk_stage_on(runner: StageRunner, k: int, actors: int, config: TailorMindConfig) -> StageResult:
    """Stage ``topk`` in ``runner``'s run directory, from RUN/cf and the dataset it was trained on."""
    run_dir = runner.run_dir
    return runner.run(
        "topk",
        lambda out: score(run_dir, out, k, actors, config),
        config={"k": k, "masked": "every split"},  # output before held-out items were masked: redone
        inputs=[run_dir / "cf", trained_on(run_dir)],
    )


def topk_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``topk`` with ``cf.topk`` items per user."""
    return topk_stage_on(pipeline.runner, pipeline.config.cf.topk, 1, pipeline.config)


def run(args: argparse.Namespace, config: TailorMindConfig) -> int:
    """Score (or skip when current) and say where the output is."""
    result = topk_stage_on(
        StageRunner(args.run, force=args.force), args.k or config.cf.topk, args.actors, config
    )
    print(f"top-{args.k or config.cf.topk} items per user in {result.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(stage_main("topk", sys.argv[1:]))
