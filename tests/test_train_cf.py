import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from jobs.cf import train
from models.config import load_config
from models.data.synth import SynthSpec, write_synthetic

CONTRACT_KEYS = {
    "recall@10",
    "ndcg@10",
    "recall@20",
    "ndcg@20",
    "sampled_recall@10",
    "sampled_ndcg@10",
    "sampled_recall@20",
    "sampled_ndcg@20",
    "epochs",
    "train_seconds",
    "num_users",
    "num_items",
    "num_tags",
}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    write_synthetic(SynthSpec(users=500, items=1000, tags=60, seed=1, topics=10, interactions=15000), root)
    return root


def _config(**cf):
    overrides = [
        f"cf.{k}={v}"
        for k, v in {
            "epochs": 4,
            "dim": 32,
            "batch_size": 2048,
            "eval_every_steps": 3,
            "lr": 0.01,
            **cf,
        }.items()
    ]
    return load_config(None, overrides)


@pytest.mark.slow
def test_training_writes_contract_outputs_and_beats_most_popular(ray_cluster, planted, tmp_path):
    metrics = train(str(planted), tmp_path, _config())
    assert set(metrics) >= CONTRACT_KEYS
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 4
    users = pq.read_table(tmp_path / "embeddings" / "users.parquet")
    items = pq.read_table(tmp_path / "embeddings" / "items.parquet")
    assert users.num_rows == 500 and items.num_rows == 1000
    assert len(users["embedding"][0].as_py()) == 32
    # planted topics: CF recovers them far better than popularity
    assert metrics["recall@20"] > 2 * metrics["most_popular"]["recall@20"]
    assert np.isfinite([metrics[k] for k in CONTRACT_KEYS if k != "epochs"]).all()


@pytest.mark.slow
def test_worker_killed_midway_resumes_from_checkpoint(ray_cluster, planted, tmp_path):
    steady = train(str(planted), tmp_path / "a", _config(use_tags=False))
    drilled = train(str(planted), tmp_path / "b", _config(use_tags=False, fault_injection_step=6))
    assert drilled["epochs"] == steady["epochs"] == 4 and drilled["steps"] == steady["steps"]
    assert drilled["fault_injected"] and not steady["fault_injected"]
    for key in ("recall@20", "ndcg@20", "sampled_recall@20"):
        assert drilled[key] == pytest.approx(steady[key], abs=0.02)


@pytest.mark.slow
def test_standalone_train_then_score_topk_with_the_cli(ray_cluster, planted, tmp_path, capsys):
    from jobs.cli import main

    run = tmp_path / "run"
    assert main(["train-cf", "--data", str(planted), "--out", str(run), "--set", "cf.epochs=1"]) == 0
    assert not (run / "data").exists()  # no pipeline data stage: score-topk finds the dataset cf used
    assert main(["score-topk", "--run", str(run), "--k", "5"]) == 0
    topk = pq.read_table(run / "topk")
    assert topk.num_rows == json.loads((run / "cf" / "metrics.json").read_text())["num_users"]
    assert {len(ids) for ids in topk["item_ids"].to_pylist()} == {5}


def _without_validation(source, target):
    """A copy of a dataset whose validation rows became train rows (LightGCN's train and test files)."""
    import dataclasses

    import pyarrow.compute as pc

    from models.data import load_dataset
    from models.data.loader import write_dataset

    dataset = load_dataset(source)
    table = dataset.interactions
    split = pc.if_else(pc.equal(table["split"], "valid"), "train", table["split"])
    table = table.set_column(table.schema.get_field_index("split"), "split", split)
    write_dataset(dataclasses.replace(dataset, interactions=table), target)
    return target


def test_without_validation_rows_each_users_latest_train_interaction_validates(planted, tmp_path):
    from models.cf.inputs import cf_inputs
    from models.data import load_dataset

    given = cf_inputs(load_dataset(planted), seed=0)
    held = cf_inputs(load_dataset(_without_validation(planted, tmp_path / "ds")), seed=0)
    assert given.validation == "given" and held.validation == "held_out_last_train"
    # the former validation item is back in train and the latest train interaction took its place
    assert held.train.nnz == given.train.nnz
    assert held.validation_users == given.num_users and not held.train.multiply(held.valid).nnz
    assert (held.test != given.test).nnz == 0


@pytest.mark.slow
def test_without_validation_rows_a_time_budget_ends_training_with_a_validated_epoch(
    ray_cluster, planted, tmp_path
):
    """No validation rows, and out of time after the first validation (step 2 of an epoch of 7): training
    ends inside the epoch, validated on the held-out train interactions."""
    data = _without_validation(planted, tmp_path / "ds")
    config = _config(epochs=20, eval_every_steps=2, time_budget_s=0.001, loss="bpr", cpus_per_worker=2)
    metrics = train(str(data), tmp_path / "cf", config)
    assert metrics["validation"] == "held_out_last_train" and metrics["validation_users"] == 500
    assert (
        metrics["steps"] == metrics["kept_step"] == 2 and metrics["epochs"] == 1 and metrics["loss"] == "bpr"
    )
    assert metrics["stopped_by"] == "time budget"
    assert 0 < metrics["best_valid_recall@20"] <= 1 and np.isfinite(metrics["recall@20"])
