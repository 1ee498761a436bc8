import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.data import load_dataset
from models.errors import TailorMindError
from tests.datasets import clean_dataset, write_interactions, write_items


def _counts(report, name):
    entry = report.to_dict()[name]
    assert entry["accepted"] + entry["quarantined"] == entry["input"]
    return entry


def test_clean_dataset_loads_with_leave_two_out_split(tmp_path):
    dataset = load_dataset(clean_dataset(tmp_path, users=3, per_user=5))
    assert dataset.items.num_rows == 150
    assert dataset.interactions.num_rows == 15
    splits = dataset.interactions["split"].to_pylist()
    assert splits.count("test") == 3 and splits.count("valid") == 3 and splits.count("train") == 9


def test_null_ids_are_quarantined_with_counts(tmp_path):
    write_items(tmp_path, ["a", None, "c"])
    write_interactions(tmp_path, [("u1", "a", 1), (None, "c", 2), ("u1", "c", 3)])
    quarantine = tmp_path / "q"
    dataset = load_dataset(tmp_path, quarantine_dir=quarantine)
    assert _counts(dataset.report, "items") == {
        "input": 3,
        "accepted": 2,
        "quarantined": 1,
        "reasons": {"null item_id": 1},
    }
    assert _counts(dataset.report, "interactions")["reasons"] == {"null user_id": 1}
    rows = pq.read_table(quarantine / "items.parquet").to_pylist()
    assert rows[0]["item_id"] is None and rows[0]["reason"] == "null item_id"


def test_duplicate_item_ids_keep_the_first(tmp_path):
    write_items(tmp_path, ["a", "b", "a"], title=["first", "b", "second"])
    write_interactions(tmp_path, [("u1", "a", 1)])
    dataset = load_dataset(tmp_path, quarantine_dir=tmp_path / "q")
    assert dataset.items["title"].to_pylist() == ["first", "b"]
    assert _counts(dataset.report, "items")["reasons"] == {"duplicate item_id": 1}
    assert pq.read_table(tmp_path / "q" / "items.parquet")["title"].to_pylist() == ["second"]


def test_unknown_item_ids_in_interactions(tmp_path):
    write_items(tmp_path, ["a", "b"])
    write_interactions(tmp_path, [("u1", "a", 1), ("u1", "zzz", 2), ("u2", "b", 3)])
    dataset = load_dataset(tmp_path, quarantine_dir=tmp_path / "q")
    assert dataset.interactions.num_rows == 2
    assert _counts(dataset.report, "interactions")["reasons"] == {"unknown item_id": 1}


def test_wrong_value_types_are_quarantined(tmp_path):
    write_items(tmp_path, ["a", "b"])
    write_interactions_raw = pa.table(
        {"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "a"], "timestamp": ["10", "soon", "2020-01-01"]}
    )
    pq.write_table(write_interactions_raw, tmp_path / "interactions.parquet")
    dataset = load_dataset(tmp_path)
    assert _counts(dataset.report, "interactions")["reasons"] == {"wrong type in timestamp": 1}
    assert sorted(dataset.interactions["timestamp"].to_pylist()) == [10, 1577836800]


def test_column_of_unusable_type_is_a_clear_error(tmp_path):
    write_items(tmp_path, ["a"])
    table = pa.table({"user_id": ["u"], "item_id": ["a"], "timestamp": pa.array([[1]], pa.list_(pa.int64()))})
    pq.write_table(table, tmp_path / "interactions.parquet")
    with pytest.raises(TailorMindError, match="column 'timestamp'"):
        load_dataset(tmp_path)


def test_non_utf8_text_is_quarantined(tmp_path):
    items = pa.table(
        {
            "item_id": ["a", "b"],
            "title": pa.array([b"Caf\xc3\xa9", b"Caf\xe9"], pa.binary()),
            "text": ["", ""],
            "tags": [[], []],
        }
    )
    pq.write_table(items, tmp_path / "items.parquet")
    write_interactions(tmp_path, [("u1", "a", 1)])
    dataset = load_dataset(tmp_path)
    assert dataset.items["title"].to_pylist() == ["Café"]
    assert _counts(dataset.report, "items")["reasons"] == {"non-UTF-8 text in title": 1}


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(TailorMindError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")
    write_items(tmp_path, ["a"])
    with pytest.raises(TailorMindError, match=r"no interactions\.parquet"):
        load_dataset(tmp_path)
    (tmp_path / "interactions.parquet").write_bytes(b"")
    with pytest.raises(TailorMindError, match="empty"):
        load_dataset(tmp_path)
    (tmp_path / "interactions.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(TailorMindError, match="not a readable Parquet"):
        load_dataset(tmp_path)
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array([], pa.string()),
                "item_id": pa.array([], pa.string()),
                "timestamp": pa.array([], pa.int64()),
            }
        ),
        tmp_path / "interactions.parquet",
    )
    with pytest.raises(TailorMindError, match="has no rows"):
        load_dataset(tmp_path)


def test_missing_required_column_names_it(tmp_path):
    pq.write_table(pa.table({"id": ["a"]}), tmp_path / "items.parquet")
    write_interactions(tmp_path, [("u1", "a", 1)])
    with pytest.raises(TailorMindError, match="lacks the required column item_id"):
        load_dataset(tmp_path)


def test_strict_mode_fails_with_file_column_count_and_examples(tmp_path):
    write_items(tmp_path, ["a", "b"])
    write_interactions(tmp_path, [("u1", "a", 1), ("u1", "x", 2), ("u2", "y", 3)])
    with pytest.raises(TailorMindError) as err:
        load_dataset(tmp_path, strict=True)
    message = str(err.value)
    assert "interactions.parquet" in message and "2 rows with unknown item_id" in message
    assert "'item_id': 'x'" in message


def test_nothing_usable_left_is_an_error(tmp_path):
    write_items(tmp_path, ["a"])
    write_interactions(tmp_path, [("u1", "x", 1)])
    with pytest.raises(TailorMindError, match="none of its 1 rows is usable"):
        load_dataset(tmp_path)


def test_split_column_is_used_and_invalid_values_quarantined(tmp_path):
    write_items(tmp_path, ["a", "b", "c"])
    write_interactions(
        tmp_path, [("u", "a", 3), ("u", "b", 2), ("u", "c", 1)], split=["test", "train", "oops"]
    )
    dataset = load_dataset(tmp_path)
    assert dict(
        zip(
            dataset.interactions["item_id"].to_pylist(),
            dataset.interactions["split"].to_pylist(),
            strict=True,
        )
    ) == {"a": "test", "b": "train"}
    assert _counts(dataset.report, "interactions")["reasons"] == {"invalid split (not train/valid/test)": 1}


def test_validate_cli_prints_counts_and_writes_quarantine(tmp_path, capsys):
    from jobs.cli import main

    write_items(tmp_path / "d", ["a", "a"])
    write_interactions(tmp_path / "d", [("u1", "a", 1)])
    assert main(["validate", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "items: 1 accepted, 1 quarantined (duplicate item_id: 1)" in out
    assert (tmp_path / "o" / "quarantine" / "items.parquet").is_file()
    assert main(["validate", "--data", str(tmp_path / "d"), "--strict"]) == 2
    assert "duplicate item_id" in capsys.readouterr().err


def test_report_is_json_serialisable(tmp_path):
    dataset = load_dataset(clean_dataset(tmp_path))
    assert json.loads(json.dumps(dataset.report.to_dict()))["items"]["input"] == 150
