"""``tailormind train-cf --data DATASET --out RUN``: hypergraph CF trained with Ray Train (DDP, checkpoints).

The workers (``runtime.cf_training``) train, validate, stop early within ``cf.time_budget_s`` and export
the kept weights' embeddings; Ray tasks then compute the test metrics part by part of the dataset's
interactions (``runtime.cf_evaluation``), so the driver never holds per-user rows. A dataset without
validation rows holds out one train interaction per user instead (``models.cf.inputs``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult, StageRunner
from models.config import TailorMindConfig
from runtime.cf_evaluation import evaluate
from runtime.cf_training import FIT_FILE, train_loop_per_worker
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

log = logging.getLogger("tailormind.cf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Dataset and run directory."""
    parser.add_argument("--data", required=True, help="TailorBench dataset (e.g. RUN/data or an import)")
    parser.add_argument("--out", required=True, type=Path, help="run directory; writes RUN/cf/")
    parser.add_argument("--force", action="store_true", help="retrain even when RUN/cf is up to date")


def train(inputs_path: str, out: Path, config: TailorMindConfig, trace_test: bool = False) -> dict[str, Any]:
    """Fit on Ray Train, then evaluate the best model on the test split and export embeddings into ``out``.

    Every validation goes to ``out/validation.json``; ``trace_test`` (benchmarks only: it reads the test
    split during training, outside the time budget) adds the test metrics of each new best to it.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    cf = config.cf
    inputs_path = str(Path(inputs_path).resolve())  # workers do not share the driver's directory
    connect(config.ray, out.parent)  # RUN/logs/ray: the Train workers' logs
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
            "trace_test": trace_test,
            "export": str(out.resolve()),
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=cf.num_workers, use_gpu=cf.use_gpu, resources_per_worker={"CPU": cf.cpus_per_worker}
        ),
        run_config=ray.train.RunConfig(
            name="cf",
            storage_path=str(storage.resolve()),
            failure_config=ray.train.FailureConfig(max_failures=cf.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),  # no line per report or checkpoint
        ),
    )
    trainer.fit()
    final = json.loads((out / FIT_FILE).read_text())
    for warning in final["warnings"]:
        log.warning("cf: %s", warning)
    train_seconds = time.perf_counter() - started
    metrics: dict[str, Any] = {
        **evaluate(out / "embeddings", inputs_path, config),
        **{k: v for k, v in final.items() if k != "warnings"},
        "fault_injected": (storage / "fault-injected").exists(),
        "train_seconds": round(train_seconds, 3),
        "loss": cf.loss,
        "use_tags": cf.use_tags,
        "num_workers": cf.num_workers,
        "warnings": final["warnings"],
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    shutil.rmtree(storage, ignore_errors=True)
    return metrics


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
