"""``tailormind train-cf --data DATASET --out RUN``: hypergraph CF trained with Ray Train (DDP, checkpoints).

Every worker holds the whole graph and a disjoint shard of each epoch's train pairs; one propagation per
optimiser step (``models.cf.trainer``). Rank 0 evaluates validation Recall@20 every ``cf.eval_every`` epochs,
which drives early stopping and the best checkpoint; ``cf.time_budget_s`` bounds the training time. The
test split is read only once, by the driver, after training. A dataset without
validation rows holds out each user's latest train interaction instead (``models.cf.inputs``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult, StageRunner
from jobs.topk import vector_column
from models.cf import build_hypergraph, full_ranking_metrics, popularity_embeddings, sampled_metrics
from models.cf.inputs import CFInputs, cf_inputs
from models.cf.trainer import CFTrainer, cf_model
from models.config import CFConfig, TailorMindConfig
from models.data import load_dataset
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

log = logging.getLogger("tailormind.cf")
VALIDATION_METRIC = "recall@20"
_STATE_FILE = "state.pt"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Dataset and run directory."""
    parser.add_argument("--data", required=True, help="TailorBench dataset (e.g. RUN/data or an import)")
    parser.add_argument("--out", required=True, type=Path, help="run directory; writes RUN/cf/")
    parser.add_argument("--force", action="store_true", help="retrain even when RUN/cf is up to date")


def _device(use_gpu: bool) -> torch.device:
    if use_gpu:
        import ray.train.torch

        return ray.train.torch.get_device()
    return torch.device("cpu")


def _load_state(checkpoint: Any) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / _STATE_FILE, map_location="cpu", weights_only=False)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: DDP model, this rank's shard of the train pairs, reports and checkpoints."""
    import ray.train
    import ray.train.torch

    cf = CFConfig(**loop_config["cf"])
    inputs: CFInputs = cf_inputs(load_dataset(loop_config["data"]), seed=loop_config["seed"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = _device(cf.use_gpu)
    torch.set_num_threads(cf.cpus_per_worker)
    torch.manual_seed(loop_config["seed"])
    graph = build_hypergraph(
        inputs.train, inputs.item_index, inputs.tag_index, inputs.num_tags, use_tags=cf.use_tags
    ).to(device)
    model = ray.train.torch.prepare_model(cf_model(graph, cf))
    trainer = CFTrainer(model, graph, inputs.train, cf, rank, world)
    core = trainer.core
    state = _load_state(ray.train.get_checkpoint())
    start_epoch, best, best_state, stale, trained_s = 1, -1.0, None, 0, 0.0
    if state is not None:  # a restarted worker group continues from the last registered checkpoint
        core.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        start_epoch, best, best_state, stale, trained_s = (
            state["epoch"] + 1,
            state["best"],
            state["best_model"],
            state["stale"],
            state["trained_seconds"],
        )
    for epoch in range(start_epoch, cf.epochs + 1):
        metrics: dict[str, Any] = {"epoch": epoch, **trainer.epoch(epoch)}
        trained_s += metrics["epoch_seconds"]
        out_of_time = cf.time_budget_s is not None and trained_s >= cf.time_budget_s
        validate = epoch % cf.eval_every == 0 or epoch == cf.epochs or out_of_time
        checkpoint = None
        if rank == 0 and validate:
            model.eval()
            score = float("nan")
            if len(inputs.valid[0]):
                with torch.no_grad():
                    user_final, item_final = core(graph)
                    score = full_ranking_metrics(user_final, item_final, inputs.train, *inputs.valid)[
                        VALIDATION_METRIC
                    ]
            metrics["valid_" + VALIDATION_METRIC] = score
            if math.isnan(score) or score > best:  # without validation users the last epoch is the best
                best, stale = (best if math.isnan(score) else score), 0
                best_state = {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}
            else:
                stale += 1
            directory = tempfile.mkdtemp(prefix="cf-ckpt-")
            torch.save(
                {
                    "model": core.state_dict(),
                    "optimizer": trainer.optimizer.state_dict(),
                    "epoch": epoch,
                    "best": best,
                    "best_model": best_state,
                    "stale": stale,
                    "trained_seconds": trained_s,
                },
                Path(directory) / _STATE_FILE,
            )
            checkpoint = ray.train.Checkpoint.from_directory(directory)
            print(  # one progress line per epoch in the job's log
                f"cf epoch {epoch}/{cf.epochs}: loss {metrics['loss']:.4f}, valid {VALIDATION_METRIC} "
                f"{score:.4f} (best {best:.4f}), {metrics['epoch_seconds']:.1f} s",
                flush=True,
            )
        stop = torch.tensor([float(stale >= cf.patience or out_of_time)], device=device)
        if world > 1:
            torch.distributed.broadcast(stop, src=0)
        metrics["stopped"] = bool(stop.item())
        ray.train.report(metrics, checkpoint=checkpoint)
        drill = Path(loop_config["drill_marker"])
        if rank == 0 and cf.fault_injection_epoch == epoch and not drill.exists():
            drill.touch()
            os._exit(1)  # the fault-tolerance drill: this worker process dies, once
        if stop.item():
            break


def train(inputs_path: str, out: Path, config: TailorMindConfig) -> dict[str, Any]:
    """Fit on Ray Train, then evaluate the best model on the test split and export embeddings into ``out``."""
    import ray.train
    from ray.train.torch import TorchTrainer

    cf = config.cf
    inputs_path = str(Path(inputs_path).resolve())  # workers do not share the driver's directory
    connect(config.ray)
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    storage = Path(tempfile.mkdtemp(prefix="train-cf-", dir=out))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cf": cf.model_dump(),
            "data": inputs_path,
            "seed": config.seed,
            "drill_marker": str(storage.resolve() / "fault-injected"),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=cf.num_workers, use_gpu=cf.use_gpu, resources_per_worker={"CPU": cf.cpus_per_worker}
        ),
        run_config=ray.train.RunConfig(
            name="cf",
            storage_path=str(storage.resolve()),
            failure_config=ray.train.FailureConfig(max_failures=cf.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    inputs = cf_inputs(load_dataset(inputs_path), seed=config.seed)
    if inputs.validation != "given":
        log.warning(
            "cf: the dataset has no validation rows; early stopping uses each user's latest train "
            "interaction instead (%d users), which is left out of training",
            len(inputs.valid[0]),
        )
    if not len(inputs.valid[0]):
        log.warning("cf: no user has a validation item; training all %d epochs, keeping the last", cf.epochs)
    result = trainer.fit()
    train_seconds = time.perf_counter() - started
    state = _load_state(result.checkpoint)
    assert state is not None, "training reported no checkpoint"
    graph = build_hypergraph(inputs.train, inputs.item_index, inputs.tag_index, inputs.num_tags, cf.use_tags)
    model = cf_model(graph, cf)
    model.load_state_dict(state["best_model"])
    with torch.no_grad():
        user_emb, item_emb = model(graph)
    metrics: dict[str, Any] = {
        **evaluate(user_emb, item_emb, inputs),
        "epochs": int(state["epoch"]),
        "best_valid_recall@20": float(state["best"]) if state["best"] >= 0 else None,
        "validation": inputs.validation,
        "validation_users": len(inputs.valid[0]),
        "fault_injected": (storage / "fault-injected").exists(),
        "train_seconds": round(train_seconds, 3),
        "last_epoch_seconds": result.metrics.get("epoch_seconds"),
        "pairs_per_second": result.metrics.get("pairs_per_second"),
        "loss": cf.loss,
        "num_users": inputs.num_users,
        "num_items": inputs.num_items,
        "num_tags": graph.num_tags,
        "use_tags": cf.use_tags,
        "num_workers": cf.num_workers,
        "most_popular": evaluate(*popularity_embeddings(inputs.train), inputs),
    }
    _write_embeddings(out / "embeddings", inputs, user_emb, item_emb)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    shutil.rmtree(storage, ignore_errors=True)
    return metrics


def evaluate(user_emb: torch.Tensor, item_emb: torch.Tensor, inputs: CFInputs) -> dict[str, float]:
    """Test-split metrics: full ranking over items unseen in train, and the seeded 1:99 sample."""
    metrics = full_ranking_metrics(user_emb, item_emb, inputs.train, *inputs.test)
    metrics.update(sampled_metrics(user_emb, item_emb, *inputs.test_candidates))
    return metrics


def _write_embeddings(
    directory: Path, inputs: CFInputs, user_emb: torch.Tensor, item_emb: torch.Tensor
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, ids, emb in (("users", inputs.user_ids, user_emb), ("items", inputs.item_ids, item_emb)):
        key = "user_id" if name == "users" else "item_id"
        table = pa.table({key: ids, "embedding": vector_column(emb.detach().cpu().float().numpy())})
        pq.write_table(table, directory / f"{name}.parquet")


def train_stage(runner: StageRunner, data: Path, config: TailorMindConfig) -> StageResult:
    """Stage ``cf`` in ``runner``'s run directory: RUN/cf/metrics.json and RUN/cf/embeddings/*.parquet."""
    return runner.run(
        "cf",
        lambda out: train(str(data), out, config),
        config={"cf": config.cf, "seed": config.seed},
        inputs=[data],
    )


def cf_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``cf`` on the validated dataset of stage ``data``."""
    return train_stage(pipeline.runner, pipeline.results["data"].path, pipeline.config)


def run(args: argparse.Namespace, config: TailorMindConfig) -> int:
    """Train (or skip when current) and print the test metrics."""
    result = train_stage(StageRunner(args.out, force=args.force), Path(args.data), config)
    metrics = json.loads((result.path / "metrics.json").read_text())
    keys = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "sampled_recall@20", "epochs", "train_seconds")
    print(json.dumps({k: metrics[k] for k in keys}))
    print(f"embeddings and metrics in {result.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(stage_main("cf", sys.argv[1:]))
