"""CF test metrics over blocks of users (what the Ray Data evaluation adds) equal one pass over everyone."""

import dataclasses

import numpy as np
import pyarrow.compute
import pytest
import torch

from models.cf import full_ranking_metrics, popularity_embeddings, rank_metrics, sampled_ranks
from models.cf.evaluation import BlockEvaluator, EvalInputs, added, metrics_of
from models.cf.inputs import cf_inputs
from models.data.movielens import import_movielens
from models.data.split import assign_leave_two_out


@pytest.fixture(scope="module")
def movielens_cf(movielens_src):
    dataset = import_movielens(movielens_src)
    split = dataclasses.replace(dataset, interactions=assign_leave_two_out(dataset.interactions))
    return cf_inputs(split, seed=0)


def test_blocks_of_users_add_up_to_the_whole_on_movielens(movielens_cf):
    inputs = EvalInputs.of(movielens_cf)
    users, items = inputs.known.shape
    g = torch.Generator().manual_seed(0)
    user_emb, item_emb = torch.randn(users, 16, generator=g), torch.randn(items, 16, generator=g)
    evaluate = BlockEvaluator(item_emb, inputs, seed=0)
    order = np.random.default_rng(0).permutation(users)  # blocks arrive in any order and any size
    blocks = np.array_split(order, [97, 300, 301])
    got = added(evaluate(rows, user_emb[torch.as_tensor(rows)]) for rows in blocks)

    whole = full_ranking_metrics(user_emb, item_emb, inputs.known, inputs.test)
    ranks = sampled_ranks(user_emb, item_emb, inputs.candidate_users, inputs.candidates)
    whole.update(rank_metrics(ranks, (10, 20), prefix="sampled_"))
    assert metrics_of(got, "model") == pytest.approx(whole, abs=1e-9)

    pop_users, pop_items = popularity_embeddings(movielens_cf.train, seed=0)
    popular = full_ranking_metrics(pop_users, pop_items, inputs.known, inputs.test)
    assert metrics_of(got, "most_popular")["recall@20"] == pytest.approx(popular["recall@20"], abs=1e-9)
    assert got["model/users"] == np.diff(inputs.test.indptr).astype(bool).sum()
    assert popular["recall@20"] > 0 and whole["recall@20"] < popular["recall@20"]  # random vs popular


def test_validation_items_are_masked_when_ranking_for_test(movielens_cf):
    """LightGCN's protocol masks every known item but the test ones: a validation item ranked first must
    not push a test item out of the top 20."""
    inputs = EvalInputs.of(movielens_cf)
    assert (inputs.known.multiply(movielens_cf.valid) != 0).sum() == movielens_cf.valid.nnz
    user = int(np.flatnonzero(np.diff(movielens_cf.valid.indptr) & np.diff(movielens_cf.test.indptr))[0])
    known = set(inputs.known[user].indices) | set(movielens_cf.test[user].indices)
    valid = movielens_cf.valid[user].indices
    test = movielens_cf.test[user].indices
    others = [i for i in range(inputs.known.shape[1]) if i not in known][:19]
    item_emb = torch.zeros(inputs.known.shape[1], 1)
    item_emb[torch.as_tensor(others)] = 3.0  # 19 unseen items first, then the validation items, then test
    item_emb[torch.as_tensor(valid)] = 2.0
    item_emb[torch.as_tensor(test)] = 1.0
    sums = BlockEvaluator(item_emb, inputs)(np.array([user]), torch.ones(1, 1))
    assert sums["model/users"] == 1 and sums["model/recall@20"] == pytest.approx(1 / len(test))


@pytest.mark.parametrize("timestamps", [True, False])
def test_part_by_part_evaluation_equals_the_whole_file(ray_cluster, tmp_path, monkeypatch, timestamps):
    """The data stage's parts (each holding its users) give the full-ranking metrics of the single file,
    with a given split or a validation item held out per user (by time, or by a draw when untimed)."""
    from models.cf.export import write_embeddings
    from models.config import load_config
    from models.data import load_dataset, write_dataset
    from models.data.loader import without_timestamps
    from models.data.synth import SynthSpec, write_synthetic
    from runtime import dataset_validation
    from runtime.cf_evaluation import evaluate

    write_synthetic(SynthSpec(users=80, items=300, tags=10, seed=0, interactions=2400), tmp_path / "synth")
    whole = load_dataset(tmp_path / "synth")
    interactions = whole.interactions.filter(pyarrow.compute.field("split") != "valid")  # no validation rows
    if not timestamps:
        interactions = without_timestamps(interactions)
    write_dataset(dataclasses.replace(whole, interactions=interactions), tmp_path / "single")
    monkeypatch.setattr(dataset_validation, "BUCKET_ROWS", 500)
    dataset_validation.validate_dataset(str(tmp_path / "single"), tmp_path / "parted", strict=False)
    assert len(list((tmp_path / "parted" / "interactions.parquet").iterdir())) >= 3
    g = torch.Generator().manual_seed(0)
    users, items = whole.interactions["user_id"].unique(), whole.items["item_id"]
    write_embeddings(
        tmp_path / "emb",
        users,
        items,
        torch.randn(len(users), 8, generator=g),
        torch.randn(len(items), 8, generator=g),
    )
    config = load_config(None, [])
    single = evaluate(tmp_path / "emb", str(tmp_path / "single"), config)
    parted = evaluate(tmp_path / "emb", str(tmp_path / "parted"), config)
    full = [f"{metric}@{k}" for metric in ("recall", "ndcg") for k in (10, 20)]
    assert {key: parted[key] for key in full} == pytest.approx({key: single[key] for key in full}, abs=1e-9)
    assert {key: parted["most_popular"][key] for key in full} == pytest.approx(
        {key: single["most_popular"][key] for key in full}, abs=1e-9
    )
    assert single["recall@20"] > 0
