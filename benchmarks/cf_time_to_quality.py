"""CF time to quality: test Recall@20 and NDCG@20 (full ranking) against training seconds, per loss and batch.

Each setting trains the same model (hypergraph LightGCN, d=64, 3 layers) with ``models.cf.trainer`` in this
process, on every core, for the same wall-clock budget; the test split is evaluated at intervals on a
clock that is paused meanwhile. BPR with 4,096-triple batches (LightGCN's own recipe, this project's former
default) is the baseline every setting is compared with at equal training time.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.cf_quality import MOVIELENS
from benchmarks.common import RESULTS_DIR, BenchResult
from models.cf import build_hypergraph, full_ranking_metrics
from models.cf.inputs import CFInputs, cf_inputs
from models.cf.trainer import CFTrainer, cf_model
from models.config import CFConfig
from models.data import load_dataset, write_dataset
from models.data.movielens import import_movielens
from models.data.synth import SynthSpec, write_synthetic

BASELINE = "bpr 4k"
SETTINGS: dict[str, dict[str, Any]] = {
    BASELINE: {"loss": "bpr", "batch_size": 4096, "lr": 0.005},
    "bpr 16k": {"loss": "bpr", "batch_size": 16384, "lr": 0.01},
    "bpr 64k": {"loss": "bpr", "batch_size": 65536, "lr": 0.05},
    "softmax 64k": {"loss": "softmax", "batch_size": 65536, "lr": 0.02, "negatives": 256},
}
MARKS_S = (300, 900, 3600)  # the 5, 15 and 60 minutes
POINTS = 8  # test evaluations per curve (at most one per epoch)


def train_curve(inputs: CFInputs, cf: CFConfig, budget_s: float) -> list[dict[str, float]]:
    """(training seconds, epoch, test Recall@20, NDCG@20) after the epochs where a curve point falls due."""
    torch.manual_seed(0)
    graph = build_hypergraph(inputs.train, inputs.item_index, inputs.tag_index, inputs.num_tags)
    model = cf_model(graph, cf)
    trainer = CFTrainer(model, graph, inputs.train, cf)
    points: list[dict[str, float]] = []
    trained, due, epoch = 0.0, 0.0, 0
    while trained < budget_s:
        epoch += 1
        trained += trainer.epoch(epoch)["epoch_seconds"]
        if trained >= due or trained >= budget_s:
            model.eval()
            with torch.no_grad():
                user_emb, item_emb = model(graph)
                metrics = full_ranking_metrics(user_emb, item_emb, inputs.train, *inputs.test)
            point = {"seconds": trained, "epoch": float(epoch)}
            points.append(point | {k: metrics[k] for k in ("recall@20", "ndcg@20")})
            due = trained + budget_s / POINTS
    return points


def at(points: list[dict[str, float]], seconds: float) -> dict[str, float] | None:
    """The last curve point reached within ``seconds`` of training (None before the first)."""
    reached = [p for p in points if p["seconds"] <= seconds]
    return reached[-1] if reached else None


def run(quick: bool = False) -> BenchResult:
    """Every setting on a synthetic graph of Gowalla's size and on MovieLens-small, one time budget each."""
    torch.set_num_threads(os.cpu_count() or 1)
    result = BenchResult("cf_time_to_quality")
    budgets = {"synthetic-30k": 240.0 if quick else 3600.0, "movielens-small": 60.0 if quick else 300.0}
    curves: dict[str, dict[str, list[dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"synthetic-30k": Path(tmp) / "synth", "movielens-small": Path(tmp) / "ml"}
        write_synthetic(
            SynthSpec(users=30_000, items=41_000, tags=200, interactions=1_200_000, image_share=0.0),
            paths["synthetic-30k"],
        )
        write_dataset(import_movielens(MOVIELENS), paths["movielens-small"])
        for dataset, path in paths.items():
            inputs = cf_inputs(load_dataset(path), seed=0)
            curves[dataset] = {}
            for name, overrides in SETTINGS.items():
                points = train_curve(inputs, CFConfig(**overrides), budgets[dataset])
                curves[dataset][name] = points
                result.add(
                    dataset=dataset,
                    setting=name,
                    **overrides,
                    train_pairs=int(inputs.train.nnz),
                    budget_s=budgets[dataset],
                    epochs=int(points[-1]["epoch"]),
                    **{k: points[-1][k] for k in ("recall@20", "ndcg@20")},
                    **{
                        f"recall@20_at_{m // 60}min": p["recall@20"]
                        for m in MARKS_S
                        if m <= budgets[dataset] and (p := at(points, m))
                    },
                    best_recall_at_20=max(p["recall@20"] for p in points),
                    curve=points,
                )
    for row in result.rows:
        base = curves[row["dataset"]][BASELINE][-1]
        row["recall@20_vs_bpr_4k"] = row["recall@20"] / base["recall@20"] if base["recall@20"] else None
    result.notes.append(
        "in-process training on all cores with models.cf.trainer (the code Ray Train runs); test metrics "
        "are full ranking over items unseen in train; the clock stops while the test split is evaluated"
    )
    _plot(result, curves)
    return result


def _plot(result: BenchResult, curves: dict[str, dict[str, list[dict[str, float]]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.2 * len(curves), 3.8))
    for ax, (dataset, per_setting) in zip(axes, curves.items(), strict=True):
        for name, points in per_setting.items():
            ax.plot([p["seconds"] for p in points], [p["recall@20"] for p in points], marker=".", label=name)
        ax.set_title(f"{dataset}: test Recall@20 vs training time")
        ax.set_xlabel("training seconds (2 cores)" if os.cpu_count() == 2 else "training seconds")
        ax.set_ylabel("Recall@20 (full ranking)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS_DIR / f"{result.name}.png", dpi=110)
    plt.close(fig)
