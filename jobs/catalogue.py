"""Stage ``catalogue``: the catalogue's taste clusters, each named once: ``RUN/catalogue/clusters.parquet/``.

A Ray task clusters the CF item embeddings of the items with train interactions (spherical k-means; cluster
0 is the most popular, ``items.parquet`` maps each item to its cluster) and keeps each cluster's most
popular items with their cards (from the captions stage); a label step (the summarizer role) names every
cluster over Ray Data. Cold start reads the result: the profiles stage for
users with few items, and the Serve app (``coldstart.catalogue``) for its clarifying questions and default.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.llm_step import LIGHT, LLMStep
from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult
from models.config import ColdStartConfig
from models.data import encode_interactions, load_dataset
from models.llm.prompts import CLUSTER_LABEL
from models.llm.rows import request_json, row_answers, summed_tallies, tally
from models.profiling.catalogue import (
    Catalogue,
    by_popularity,
    cluster_embeddings,
    cluster_table,
    distinctive_tags,
    fallback_label,
    label_request,
)
from models.vectors import embedding_matrix
from runtime.artifacts import CATALOGUE_CLUSTERS, CATALOGUE_ITEMS
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

_UNLABELLED = "unlabelled.parquet"


def build_clusters(
    data_dir: str, cf_dir: str, captions_dir: str, settings: ColdStartConfig, seed: int, out: str
) -> dict[str, int]:
    """Cluster the items with train interactions and write the clusters with their label requests."""
    dataset = load_dataset(data_dir)
    encoded = encode_interactions(dataset)
    popularity = np.asarray(encoded.matrix(("train",)).sum(axis=0)).ravel()
    items = pq.read_table(Path(cf_dir) / "embeddings" / "items.parquet")
    item_ids = items["item_id"].combine_chunks()
    interactions = popularity[
        pc.index_in(item_ids, value_set=encoded.item_ids).to_numpy(zero_copy_only=False)
    ]
    cards = pq.read_table(Path(captions_dir) / "items.parquet", columns=["item_id", "card"])
    item_cards = cards["card"].combine_chunks().take(pc.index_in(item_ids, value_set=cards["item_id"]))
    active = np.flatnonzero(interactions > 0)
    picked = pa.array(active)
    active_ids = item_ids.take(picked)
    raw = cluster_embeddings(embedding_matrix(items["embedding"])[active], settings.clusters, seed)
    clusters = by_popularity(raw, interactions[active])
    members = pa.table({"item_id": active_ids, "cluster": pa.array(clusters, pa.int32())})
    pq.write_table(members, Path(out) / CATALOGUE_ITEMS)
    table = cluster_table(
        active_ids,
        item_cards.take(picked),
        interactions[active],
        clusters,
        settings.items_per_cluster,
    )
    item_tags = (
        dataset.items["tags"]
        .combine_chunks()
        .take(pc.index_in(active_ids, value_set=dataset.items["item_id"].combine_chunks()))
    )
    tags = distinctive_tags(item_tags.to_pylist(), clusters)
    requests = [
        [request_json(label_request(str(n), cards, tags[n]))]
        for n, cards in enumerate(table["cards"].to_pylist())
    ]
    table = table.append_column("tags", pa.array(tags, pa.list_(pa.string())))
    table = table.append_column("label_requests", pa.array(requests, pa.list_(pa.string())))
    pq.write_table(table, Path(out) / _UNLABELLED)
    return {"clusters": table.num_rows, "items_clustered": len(active)}


def label_batch(batch: pa.Table) -> pa.Table:
    """Each cluster's label (its most popular item's title when the LLM gave none) and error."""
    labels, errors, calls = [], [], []
    for row in batch.select(["cards", "label_answers", "label_errors", "label_attempts"]).to_pylist():
        answer = row_answers(row, "label")[0]
        labels.append(answer.value["label"].strip() if answer.value else fallback_label(row["cards"]))
        errors.append(answer.error)
        calls.append(tally(row, ["label"]))
    table = batch.drop_columns(["label_answers", "label_errors", "label_attempts"])
    table = table.append_column("label", pa.array(labels, pa.string()))
    table = table.append_column("error", pa.array(errors, pa.string()))
    return table.append_column("llm_calls", pa.array(calls, pa.string()))


def _summary(path: str, settings: ColdStartConfig, llm: Any) -> dict[str, Any]:
    """Clusters, fallback labels, LLM calls and the questions cold-start users are asked."""
    table = pq.read_table(path)
    questions = Catalogue.from_table(table, settings).questions()
    return {
        "unlabelled": table.num_rows - table["error"].null_count,
        "llm_calls": summed_tallies(table["llm_calls"].to_pylist(), llm, {"label": "summarizer"}),
        "questions": [f"{q['text']} {' / '.join(q['choices'])}" for q in questions],
    }


def catalogue_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``catalogue``: RUN/catalogue/clusters.parquet/ (clusters, items, cards, labels)."""
    import ray
    import ray.data

    config = pipeline.config
    data, cf, captions = (pipeline.results[name].path for name in ("data", "cf", "captions"))
    settings = config.coldstart

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray, pipeline.runner.run_dir)
        task = ray.remote(build_clusters).options(num_cpus=1)
        where = [str(p.resolve()) for p in (data, cf, captions, out)]
        counts = ray.get(task.remote(*where[:3], settings, config.seed, where[3]))
        clusters = ray.data.read_parquet(str((out / _UNLABELLED).resolve()))
        labelled = LLMStep("label", config.llm.summarizer, config.seed)(clusters)
        path = str((out / CATALOGUE_CLUSTERS).resolve())
        labelled.map_batches(label_batch, batch_format="pyarrow", **LIGHT).write_parquet(path)
        (out / _UNLABELLED).unlink()
        summary = ray.get(ray.remote(_summary).options(**LIGHT).remote(path, settings, config.llm))
        return {**counts, **summary, "prompt": CLUSTER_LABEL.key}

    chosen = {"clusters", "items_per_cluster", "num_questions", "choices_per_question"}
    section = {
        "coldstart": settings.model_dump(include=chosen),
        "summarizer": config.llm.summarizer,
        "prompt": CLUSTER_LABEL.key,
        "seed": config.seed,
    }
    return pipeline.runner.run("catalogue", build, config=section, inputs=[data, cf, captions])


if __name__ == "__main__":
    raise SystemExit(stage_main("catalogue", sys.argv[1:]))
