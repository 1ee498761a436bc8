"""CF time to quality: test Recall@20 and NDCG@20 (full ranking) against training seconds, per loss and batch.

Each setting trains the same model (hypergraph LightGCN, d=64, 3 layers) with ``models.cf.trainer`` in a
worker process, two settings at a time with half the cores each (an hour per setting would otherwise take
the whole run four). After every epoch, on a stopped clock, the valid and test splits are ranked in one
pass; the figures reported are the test figures of the epoch the CF job would keep by then (the best valid
Recall@20 so far, as its early stopping does), with the last epoch's alongside. BPR with
4,096-triple batches (LightGCN's own recipe) is the baseline every setting
is compared with at equal training time. One challenger draws four negatives per positive into the same
step (the propagation, which dominates a step, is shared by them). The full run gives the baseline and the
default an hour on the synthetic graph and the challengers 15 minutes (a challenger that beats the default
there earns an hour). Each finished curve is checkpointed under ``benchmarks/results/partial``, so a run cut
short (the full one takes about three and a half hours here) resumes with the settings it has not finished.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.cf_quality import MOVIELENS
from benchmarks.common import RESULTS_DIR, BenchResult, Checkpoints
from models.cf import build_hypergraph, full_ranks, rank_metrics
from models.cf.inputs import CFInputs, cf_inputs
from models.cf.trainer import CFTrainer, cf_model
from models.config import CFConfig
from models.data import load_dataset, write_dataset
from models.data.movielens import import_movielens
from models.data.synth import SynthSpec, write_synthetic

BASELINE = "bpr 4k"
SETTINGS: dict[str, dict[str, Any]] = {
    BASELINE: {"loss": "bpr", "batch_size": 4096, "lr": 0.005, "bpr_negatives": 1},
    "bpr 16k": {"loss": "bpr", "batch_size": 16384, "lr": 0.01, "bpr_negatives": 1},
    "bpr 16k x4 neg": {"loss": "bpr", "batch_size": 16384, "lr": 0.01, "bpr_negatives": 4},
    "bpr 64k": {"loss": "bpr", "batch_size": 65536, "lr": 0.05, "bpr_negatives": 1},
    "softmax 64k": {"loss": "softmax", "batch_size": 65536, "lr": 0.02, "negatives": 256},
}
DEFAULT = next(name for name, setting in SETTINGS.items() if CFConfig(**setting) == CFConfig())
HOUR_LONG = (BASELINE, "bpr 16k", "bpr 16k x4 neg")  # x4 neg earned its hour: best at 15 min (0.257, 0.255)
MARKS_S = (300, 900, 3600)  # the 5, 15 and 60 minutes
Curve = list[dict[str, float]]
PARALLEL = 2  # settings trained at a time, each on cores // PARALLEL threads


def budgets(dataset: str, quick: bool) -> dict[str, float]:
    """Training seconds per setting: an hour for the baseline, the default and the challenger that beat the
    default at 15 minutes on the full synthetic run, 15 minutes for the others."""
    if quick:
        return dict.fromkeys(SETTINGS, 240.0 if dataset == "synthetic-30k" else 60.0)
    if dataset == "movielens-small":
        return dict.fromkeys(SETTINGS, 300.0)
    return {name: 3600.0 if name in HOUR_LONG else 900.0 for name in SETTINGS}


def curve_in_worker(path: Path, setting: str, budget_s: float, threads: int) -> tuple[int, Curve]:
    """Train pairs and ``train_curve`` of one setting on the dataset at ``path``, on ``threads`` threads."""
    torch.set_num_threads(threads)
    inputs = cf_inputs(load_dataset(path), seed=0)
    return int(inputs.train.nnz), train_curve(inputs, CFConfig(**SETTINGS[setting]), budget_s)


def train_curve(inputs: CFInputs, cf: CFConfig, budget_s: float) -> Curve:
    """Per validated epoch: training seconds, valid Recall@20, test Recall@20 and NDCG@20 of that epoch and
    of the epoch the CF job would keep by then (the best valid Recall@20 so far, as its early stopping does).

    Validation follows ``cf.eval_every`` (and the last epoch); both splits are ranked in one pass while the
    training clock is stopped.
    """
    torch.manual_seed(0)
    graph = build_hypergraph(inputs.train, inputs.item_index, inputs.tag_index, inputs.num_tags)
    model = cf_model(graph, cf)
    trainer = CFTrainer(model, graph, inputs.train, cf)
    users, held_out = held_out_columns(inputs)
    points: Curve = []
    kept: dict[str, float] = {}
    trained, epoch = 0.0, 0
    while trained < budget_s:
        epoch += 1
        trained += trainer.epoch(epoch)["epoch_seconds"]
        if epoch % cf.eval_every and trained < budget_s:
            continue
        model.eval()
        with torch.no_grad():
            user_emb, item_emb = model(graph)
            ranks = full_ranks(user_emb, item_emb, inputs.train, users, held_out)
        valid, test = (rank_metrics(r[r >= 0], (20,)) for r in ranks.T)
        if not kept or valid["recall@20"] > kept["valid_recall@20"]:
            kept = {"valid_recall@20": valid["recall@20"], "kept_epoch": float(epoch)}
            kept |= {f"kept_{name}": test[name] for name in ("recall@20", "ndcg@20")}
        points.append(
            {"seconds": trained, "epoch": float(epoch), "valid_recall@20": valid["recall@20"]}
            | {name: test[name] for name in ("recall@20", "ndcg@20")}
            | {name: value for name, value in kept.items() if name != "valid_recall@20"}
        )
    return points


def held_out_columns(inputs: CFInputs) -> tuple[np.ndarray, np.ndarray]:
    """Every user with a valid or test item, and their [valid, test] items (-1 where a user has none)."""
    users = np.union1d(inputs.valid[0], inputs.test[0])
    columns = np.full((len(users), 2), -1, np.int64)
    for column, (split_users, items) in enumerate((inputs.valid, inputs.test)):
        columns[np.searchsorted(users, split_users), column] = items
    return users, columns


def at(points: Curve, seconds: float) -> dict[str, float] | None:
    """The last curve point reached within ``seconds`` of training (None before the first)."""
    reached = [p for p in points if p["seconds"] <= seconds]
    return reached[-1] if reached else None


def run(quick: bool = False) -> BenchResult:
    """Every setting on a synthetic graph of Gowalla's size and on MovieLens-small, two at a time."""
    result = BenchResult("cf_time_to_quality")
    threads = max(1, (os.cpu_count() or 1) // PARALLEL)
    checkpoints = Checkpoints("cf_time_to_quality")
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"synthetic-30k": Path(tmp) / "synth", "movielens-small": Path(tmp) / "ml"}
        write_synthetic(
            SynthSpec(users=30_000, items=41_000, tags=200, interactions=1_200_000, image_share=0.0),
            paths["synthetic-30k"],
        )
        write_dataset(import_movielens(MOVIELENS), paths["movielens-small"])
        spawn = multiprocessing.get_context("spawn")
        budget = {dataset: budgets(dataset, quick) for dataset in paths}
        runs = [(d, n) for d in paths for n in SETTINGS]  # the rows' order
        keys = {run: checkpoint_key(*run, budget[run[0]][run[1]], threads) for run in runs}
        curves = {run: checkpoints.read(keys[run], SETTINGS[run[1]]) for run in runs}
        pending = [run for run in runs if curves[run] is None]
        pending.sort(key=lambda run: -budget[run[0]][run[1]])  # longest first
        with ProcessPoolExecutor(PARALLEL, mp_context=spawn) as pool:
            futures = {
                pool.submit(curve_in_worker, paths[d], n, budget[d][n], threads): (d, n) for d, n in pending
            }
            for future in as_completed(futures):
                run = futures[future]
                train_pairs, curve = future.result()
                figures = {"train_pairs": train_pairs, "curve": curve}
                curves[run] = checkpoints.write(keys[run], SETTINGS[run[1]], figures)
    for dataset, name in runs:
        measured = curves[dataset, name]
        assert measured is not None
        points = measured["curve"]
        result.add(
            dataset=dataset,
            setting=name,
            default=name == DEFAULT,  # the setting CFConfig's defaults train
            **SETTINGS[name],
            train_pairs=measured["train_pairs"],
            budget_s=budget[dataset][name],
            threads=threads,
            measured_at=measured["measured_at"],
            epochs=int(points[-1]["epoch"]),
            kept_epoch=int(points[-1]["kept_epoch"]),
            **{k: points[-1][f"kept_{k}"] for k in ("recall@20", "ndcg@20")},
            last_epoch_recall_at_20=points[-1]["recall@20"],
            **{
                f"recall@20_at_{m // 60}min": p["kept_recall@20"]
                for m in MARKS_S
                if m <= budget[dataset][name] and (p := at(points, m))
            },
            best_epoch_recall_at_20=max(p["recall@20"] for p in points),
            curve=points,
        )
    baselines = {row["dataset"]: row["curve"] for row in result.rows if row["setting"] == BASELINE}
    for row in result.rows:
        baseline = at(baselines[row["dataset"]], row["budget_s"])
        row["recall@20_vs_bpr_4k"] = (
            row["recall@20"] / baseline["kept_recall@20"] if baseline and baseline["kept_recall@20"] else None
        )
    result.notes.append(
        f"training in worker processes, {PARALLEL} settings at a time with {threads} torch thread(s) each, "
        "with models.cf.trainer (the code Ray Train runs); test metrics are full ranking over items unseen "
        "in train; recall@20 and the marks are the test figures of the epoch the CF job keeps (best valid "
        "Recall@20 so far), last_epoch_recall_at_20 the last epoch's; valid and test are ranked after every "
        "epoch in one pass, on a stopped clock; vs_bpr_4k compares kept figures at the setting's own budget; "
        "measured_at is when a setting's curve finished (a run cut short resumes from its checkpoints)"
    )
    _plot(result)
    checkpoints.clear()
    return result


def checkpoint_key(dataset: str, setting: str, budget_s: float, threads: int) -> str:
    """The checkpoint of one setting's curve on a dataset, budget and thread count."""
    return f"{dataset}-{setting}-{budget_s:.0f}s-{threads}t"


def _plot(result: BenchResult) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(row["dataset"] for row in result.rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.2 * len(datasets), 3.8))
    for ax, dataset in zip(axes, datasets, strict=True):
        for row in (row for row in result.rows if row["dataset"] == dataset):
            seconds = [p["seconds"] for p in row["curve"]]
            kept_recall = [p["kept_recall@20"] for p in row["curve"]]
            label = f"{row['setting']} (default)" if row["default"] else row["setting"]
            (kept,) = ax.plot(seconds, kept_recall, marker=".", label=label)
            ax.plot(
                seconds, [p["recall@20"] for p in row["curve"]], color=kept.get_color(), alpha=0.3, lw=0.8
            )
        ax.set_title(f"{dataset}: test Recall@20 of the kept epoch (faint: last epoch)", fontsize=9)
        ax.set_xlabel(f"training seconds ({row['threads']} thread(s), {PARALLEL} settings at a time)")
        ax.set_ylabel("Recall@20 (full ranking)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS_DIR / f"{result.name}.png", dpi=110)
    plt.close(fig)
