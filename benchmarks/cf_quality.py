"""CF quality on MovieLens latest-small: hypergraph vs plain LightGCN vs most-popular, over seeds."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from benchmarks.common import RESULTS_DIR, BenchResult, bar_plot
from jobs.cf import train
from models.config import load_config
from models.data import write_dataset
from models.data.movielens import import_movielens

MOVIELENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"
METRICS = ("recall@20", "ndcg@20", "recall@10", "ndcg@10", "sampled_recall@20")


def run(quick: bool = False) -> BenchResult:
    """Train each variant per seed on the same split and report test metrics with mean and std."""
    result = BenchResult("cf_quality")
    seeds = [0] if quick else [0, 1, 2]
    epochs = 3 if quick else 40
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "ml"
        write_dataset(import_movielens(MOVIELENS), data)
        per_model: dict[str, list[dict[str, float]]] = {"hypergraph": [], "lightgcn": [], "most_popular": []}
        for seed in seeds:
            for name, use_tags in (("hypergraph", True), ("lightgcn", False)):
                config = load_config(None, [f"seed={seed}", f"cf.use_tags={use_tags}", f"cf.epochs={epochs}"])
                metrics = train(str(data), Path(tmp) / f"{name}-{seed}", config)
                per_model[name].append(metrics)
                result.add(
                    model=name,
                    seed=seed,
                    epochs=metrics["epochs"],
                    train_seconds=metrics["train_seconds"],
                    **{m: metrics[m] for m in METRICS},
                )
                if name == "hypergraph":
                    per_model["most_popular"].append(metrics["most_popular"])
                    result.add(
                        model="most_popular", seed=seed, **{m: metrics["most_popular"][m] for m in METRICS}
                    )
    for name, runs in per_model.items():
        summary = {m: statistics.mean(r[m] for r in runs) for m in METRICS}
        spread = {f"{m}_std": statistics.pstdev(r[m] for r in runs) for m in METRICS}
        result.add(model=f"{name} (mean)", seeds=len(runs), **summary, **spread)
    base = statistics.mean(r["recall@20"] for r in per_model["most_popular"])
    labels = list(per_model)
    values = [statistics.mean(r["recall@20"] for r in per_model[n]) / base for n in labels]
    bar_plot(
        RESULTS_DIR / "cf_quality.png", "MovieLens-small Recall@20 vs most-popular", labels, values, "ratio"
    )
    result.notes.append("test split, leave-two-out by time; validation Recall@20 picks the epoch; ratio plot")
    return result
