import numpy as np
import pyarrow as pa
import pytest

from models.data import assign_leave_two_out, encode_interactions, load_dataset, sample_candidates
from models.errors import TailorMindError
from tests.datasets import clean_dataset, write_interactions, write_items


def _split_of(table):
    return {
        (u, i): s
        for u, i, s in zip(*(table[c].to_pylist() for c in ("user_id", "item_id", "split")), strict=True)
    }


def test_leave_two_out_by_time_with_item_id_tiebreak():
    table = pa.table(
        {
            "user_id": ["u", "u", "u", "u", "v", "v"],
            "item_id": ["d", "c", "b", "a", "x", "y"],
            "timestamp": pa.array([1, 5, 5, 2, 1, 2], pa.int64()),
        }
    )
    split = _split_of(assign_leave_two_out(table))
    # u: a(2) then the tie at t=5 ordered b before c: b = valid, c = test
    assert split[("u", "c")] == "test" and split[("u", "b")] == "valid"
    assert split[("u", "a")] == "train" and split[("u", "d")] == "train"
    # fewer than 3 interactions: train only
    assert split[("v", "x")] == "train" and split[("v", "y")] == "train"


def test_encoding_matrix_and_last_per_user(tmp_path):
    dataset = load_dataset(clean_dataset(tmp_path, users=3, items=20, per_user=5))
    encoded = encode_interactions(dataset)
    assert encoded.num_users == 3 and encoded.num_items == 20
    train = encoded.matrix(("train",))
    assert train.shape == (3, 20) and train.nnz == 9
    users, items = encoded.last_per_user("test")
    assert len(users) == 3
    test_pairs = {
        (encoded.user_ids[u].as_py(), encoded.item_ids[i].as_py()) for u, i in zip(users, items, strict=True)
    }
    expected = {(u, i) for (u, i), s in _split_of(dataset.interactions).items() if s == "test"}
    assert test_pairs == expected


def test_sampler_draws_distinct_unseen_negatives_deterministically(tmp_path):
    dataset = load_dataset(clean_dataset(tmp_path, users=30, items=150, per_user=8))
    encoded = encode_interactions(dataset)
    sample = sample_candidates(encoded, "test", num_negatives=99, seed=7)
    assert sample.candidates.shape == (30, 100)
    seen = encoded.matrix(("train", "valid", "test")).toarray() > 0
    _, test_items = encoded.last_per_user("test")
    assert (sample.positives == test_items).all()
    for row, user in enumerate(sample.users):
        negatives = sample.candidates[row, 1:]
        assert len(set(negatives.tolist())) == 99
        assert not seen[user, negatives].any()
    again = sample_candidates(encoded, "test", num_negatives=99, seed=7)
    assert np.array_equal(again.candidates, sample.candidates)
    other = sample_candidates(encoded, "test", num_negatives=99, seed=8)
    assert not np.array_equal(other.candidates, sample.candidates)


def test_sampler_covers_users_who_saw_most_of_the_catalogue(tmp_path):
    write_items(tmp_path, [f"i{j}" for j in range(105)])
    rows = [("heavy", f"i{j}", j) for j in range(5)] + [
        ("light", "i0", 1),
        ("light", "i1", 2),
        ("light", "i2", 3),
    ]
    write_interactions(tmp_path, rows)
    encoded = encode_interactions(load_dataset(tmp_path))
    sample = sample_candidates(encoded, "valid", num_negatives=100, seed=0)
    heavy = int(np.flatnonzero(np.asarray(encoded.user_ids.to_pylist()) == "heavy")[0])
    row = int(np.flatnonzero(sample.users == heavy)[0])
    assert sorted(sample.candidates[row, 1:].tolist()) == list(range(5, 105))


def test_sampler_refuses_when_the_catalogue_is_too_small(tmp_path):
    encoded = encode_interactions(load_dataset(clean_dataset(tmp_path, users=2, items=50, per_user=5)))
    with pytest.raises(TailorMindError, match="fewer than 99 items"):
        sample_candidates(encoded, "test", num_negatives=99)
