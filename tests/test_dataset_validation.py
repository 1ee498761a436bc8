"""The data stage's validation in blocks and buckets on Ray gives what validating the whole file does."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.data import load_dataset
from models.data.loader import without_timestamps
from models.errors import TailorMindError
from runtime import dataset_validation
from runtime.dataset_validation import validate_dataset
from tests.datasets import write_items

ROW_GROUP = 7  # rows per input row group: several blocks and buckets on a small file


def _messy_dataset(root, timestamps: bool = True):
    """Items with a repeated id; interactions with unknown items, null users and a bad timestamp spread
    over row groups; users with repeats in different row groups."""
    write_items(root, [f"i{j}" for j in range(40)] + ["i3"])
    users, items, times = [], [], []
    for u in range(9):
        for k in range(6):
            users.append(f"u{u}")
            items.append(f"i{(u * 5 + k) % 40}")
            times.append(1000 * k + u)
    items[4], users[11], times[20] = "nope", None, None
    table = pa.table({"user_id": users, "item_id": items, "timestamp": pa.array(times, pa.int64())})
    table = table if timestamps else without_timestamps(table)
    pq.write_table(table, root / "interactions.parquet", row_group_size=ROW_GROUP)
    pq.write_table(
        pa.table({"user_id": [f"u{u}" for u in range(9)] + ["u2", "u7", None]}),
        root / "users.parquet",
        row_group_size=4,
    )
    return root


def _rows(table: pa.Table) -> list[tuple]:
    return sorted(tuple(row.values()) for row in table.to_pylist())


@pytest.mark.parametrize("timestamps", [True, False])
def test_blocks_and_buckets_give_what_the_whole_file_gives(ray_cluster, tmp_path, monkeypatch, timestamps):
    monkeypatch.setattr(dataset_validation, "BLOCK_ROWS", 10)
    monkeypatch.setattr(dataset_validation, "BUCKET_ROWS", 12)
    source = _messy_dataset(tmp_path / "in", timestamps)
    whole = load_dataset(source, quarantine_dir=tmp_path / "whole-quarantine")
    out = tmp_path / "out"
    report = validate_dataset(str(source), out, strict=False)

    assert report.to_dict() == whole.report.to_dict()
    assert report.to_dict()["interactions"]["reasons"] == {
        "null timestamp": 1,
        "null user_id": 1,
        "unknown item_id": 1,
    }
    assert report.to_dict()["users"]["reasons"] == {"null user_id": 1, "duplicate user_id": 2}
    assert len(list((out / "interactions.parquet").iterdir())) >= 3  # 54 rows in 5 buckets of about 12
    streamed = load_dataset(out)  # what every later stage reads
    assert _rows(streamed.interactions) == _rows(whole.interactions)
    assert streamed.has_timestamps is timestamps
    assert _rows(streamed.users) == _rows(whole.users)
    quarantined = pq.read_table(out / "quarantine" / "interactions.parquet")
    assert sorted(quarantined["reason"].to_pylist()) == sorted(
        pq.read_table(tmp_path / "whole-quarantine" / "interactions.parquet")["reason"].to_pylist()
    )
    assert pq.read_table(out / "quarantine" / "users.parquet").num_rows == 3
    assert not (out / dataset_validation.PIECES).exists()


def test_a_strict_stop_in_a_block_is_the_one_paragraph_error(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_validation, "BLOCK_ROWS", 10)
    source = _messy_dataset(tmp_path / "in")
    with pytest.raises(TailorMindError, match="strict mode stops at the first kind of bad row") as error:
        validate_dataset(str(source), tmp_path / "out", strict=True)
    assert "Traceback" not in str(error.value)
