import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from models.data import load_dataset, write_dataset
from tests.datasets import write_interactions, write_items


def _embeddings(path, key, ids, values):
    flat = pa.array(values.reshape(-1).astype(np.float32))
    column = pa.FixedSizeListArray.from_arrays(flat, values.shape[1]).cast(pa.list_(pa.float32()))
    pq.write_table(pa.table({key: ids, "embedding": column}), path)


@pytest.mark.slow
def test_score_topk_matches_brute_force(ray_cluster, tmp_path):
    rng = np.random.default_rng(0)
    num_users, num_items, dim, k = 300, 120, 8, 10
    items = [f"i{j}" for j in range(num_items)]
    users = [f"u{u:03d}" for u in range(num_users)]
    write_items(tmp_path / "src", items)
    rows = [(u, items[j], t) for u in users for t, j in enumerate(rng.choice(num_items, 6, replace=False))]
    write_interactions(tmp_path / "src", rows)
    run = tmp_path / "run"
    dataset = load_dataset(tmp_path / "src")
    write_dataset(dataset, run / "data")
    (run / "cf" / "embeddings").mkdir(parents=True)
    user_emb, item_emb = rng.normal(size=(num_users, dim)), rng.normal(size=(num_items, dim))
    _embeddings(run / "cf" / "embeddings" / "users.parquet", "user_id", users, user_emb)
    _embeddings(run / "cf" / "embeddings" / "items.parquet", "item_id", items, item_emb)

    assert main(["score-topk", "--run", str(run), "--k", str(k), "--actors", "2"]) == 0

    out = pq.ParquetDataset(run / "topk").read().to_pylist()
    assert len(out) == num_users
    inter = dataset.interactions.to_pylist()
    assert {r["split"] for r in inter} == {"train", "valid", "test"}
    scores = user_emb.astype(np.float32) @ item_emb.astype(np.float32).T
    for u, user in enumerate(users):
        seen = {items.index(r["item_id"]) for r in inter if r["user_id"] == user}  # held-out items too
        scores[u, list(seen)] = -np.inf
    expected = {user: np.argsort(-scores[u], kind="stable")[:k] for u, user in enumerate(users)}
    for row in out:
        assert [items.index(i) for i in row["item_ids"]] == expected[row["user_id"]].tolist()
        assert np.all(np.diff(row["scores"]) <= 0)
