"""The Ray Train worker loop of CF training: DDP model, this rank's shard of each epoch's train pairs, and
on rank 0 the validations that drive early stopping, checkpoints and the kept weights' export.

Every worker holds the whole graph; one propagation per optimiser step (``models.cf.trainer``). Rank 0
validates Recall@20 every ``cf.eval_every_steps`` steps (``models.cf.validation``); each validation is a
Ray Train report with a checkpoint, so a restarted worker group resumes from the last one. At the end rank
0 writes the kept weights' embeddings, the validation curve and the fit's summary into the stage's directory.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from models.cf import build_hypergraph, full_ranking_metrics
from models.cf.export import fit_summary, write_embeddings
from models.cf.inputs import CFInputs, cf_inputs
from models.cf.trainer import CFFit, CFTrainer, Validation, cf_model
from models.cf.validation import Validator
from models.config import CFConfig
from models.data import load_dataset

STATE_FILE = "state.pt"
FIT_FILE = "fit.json"  # rank 0's summary of the fit, beside the embeddings
PROGRESS_EVERY_S = 30.0


def _device(use_gpu: bool) -> torch.device:
    if use_gpu:
        import ray.train.torch

        return ray.train.torch.get_device()
    return torch.device("cpu")


def _load_state(checkpoint: Any) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)


def _quiet_report_lines() -> None:
    """Ray Train logs every report at INFO under a logger named after its source file, outside ``ray.train``
    (so ``LoggingConfig`` does not reach it): a line per validation in the job's log unless lowered here."""
    from ray.train.v2._internal.execution import context

    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker: DDP model, this rank's shard of each epoch, rank 0 validates and checkpoints."""
    import ray.train
    import ray.train.torch

    _quiet_report_lines()
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
    validator = None
    if rank == 0:
        validator = Validator(
            trainer.core, graph, inputs.train, inputs.valid, cf.max_valid_users, loop_config["seed"]
        )
    fit = CFFit(trainer, cf, validator, agree=lambda stop: _agree(stop, world, device))
    state = _load_state(ray.train.get_checkpoint())
    if state is not None:  # a restarted worker group continues from the last registered checkpoint
        fit.load_state_dict(state)
    popular = validator.most_popular() if validator is not None else float("nan")
    printed = [time.monotonic()]
    drill = Path(loop_config["drill_marker"])

    def on_validation(point: Validation) -> None:
        checkpoint = None
        if rank == 0 and point.improved and loop_config["trace_test"]:  # benchmarks' time-to-quality curve
            with torch.no_grad():
                user_emb, item_emb = trainer.core(graph)
                test = full_ranking_metrics(user_emb, item_emb, inputs.known_before_test, inputs.test, (20,))
            fit.curve[-1].update({f"test_{key}": value for key, value in test.items()})
        if rank == 0:
            directory = tempfile.mkdtemp(prefix="cf-ckpt-")
            torch.save(fit.state_dict(), Path(directory) / STATE_FILE)
            checkpoint = ray.train.Checkpoint.from_directory(directory)
            if point.stop or time.monotonic() - printed[0] >= PROGRESS_EVERY_S:
                printed[0] = time.monotonic()
                print(point.line(), flush=True)  # progress in the job's log, at most every 30 s
        metrics = {
            **asdict(point),
            "valid_most_popular": popular,
            "validation_users": len(validator.users) if validator else 0,
        }
        ray.train.report(metrics, checkpoint=checkpoint)
        if rank == 0 and cf.fault_injection_step == point.step and not drill.exists():
            drill.touch()
            os._exit(1)  # the fault-tolerance drill: this worker process dies, once

    fit.run(on_validation)
    if rank == 0:  # the kept weights' embeddings, written by the worker that holds them
        if fit.best_model is not None:
            trainer.core.load_state_dict(fit.best_model)
        with torch.no_grad():
            user_emb, item_emb = trainer.core(graph)
        export = Path(loop_config["export"])
        write_embeddings(export / "embeddings", inputs.user_ids, inputs.item_ids, user_emb, item_emb)
        (export / "validation.json").write_text(json.dumps(fit.curve, indent=1))
        (export / FIT_FILE).write_text(json.dumps(fit_summary(fit, inputs, popular, graph.num_tags)))


def _agree(stop: bool, world: int, device: torch.device) -> bool:
    """Rank 0's stop decision on every rank."""
    flag = torch.tensor([float(stop)], device=device)
    if world > 1:
        torch.distributed.broadcast(flag, src=0)
    return bool(flag.item())
