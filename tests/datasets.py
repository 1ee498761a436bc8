"""Small hand-written TailorBench datasets for tests."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def write_items(root: Path, ids: list, **columns) -> None:
    """items.parquet with ``ids`` and default title/text/tags, plus any override columns."""
    n = len(ids)
    data = {
        "item_id": ids,
        "title": columns.pop("title", [f"Item {i}" for i in range(n)]),
        "text": columns.pop("text", ["text"] * n),
        "tags": columns.pop("tags", [["tag"]] * n),
        **columns,
    }
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(data), root / "items.parquet")


def write_interactions(root: Path, rows: list[tuple], split: list | None = None) -> None:
    """interactions.parquet from (user_id, item_id, timestamp) rows."""
    users, items, times = (list(col) for col in zip(*rows, strict=True))
    data = {"user_id": users, "item_id": items, "timestamp": pa.array(times, pa.int64())}
    if split is not None:
        data["split"] = split
    pq.write_table(pa.table(data), root / "interactions.parquet")


def clean_dataset(root: Path, users: int = 4, items: int = 150, per_user: int = 5) -> Path:
    """A valid dataset: ``users`` users with ``per_user`` interactions each, at distinct times."""
    write_items(root, [f"i{j}" for j in range(items)])
    rows = [(f"u{u}", f"i{(u * 7 + k) % items}", 100 * k + u) for u in range(users) for k in range(per_user)]
    write_interactions(root, rows)
    return root
