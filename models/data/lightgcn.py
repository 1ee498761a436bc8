"""Convert a LightGCN-format folder (``train.txt``/``test.txt``/``valid.txt``, ``USER ITEM ...`` per line).

Every graph-CF paper ships its splits this way. The files carry no timestamps: interactions get timestamp 0
and the interactions file says so in its schema metadata (``TIMESTAMPS_KEY``), which tells the loader that
"latest" means nothing and a held-out item must be drawn at random (seeded) instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.data.loader import TailorBenchDataset, without_timestamps
from models.data.quarantine import FileReport, ValidationReport
from models.errors import TailorMindError

SPLIT_FILES = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}
MAX_ID = 2**62


def import_lightgcn(src: str | Path) -> tuple[TailorBenchDataset, pa.Table]:
    """(dataset, quarantined lines): interactions of every split file, items named by their ids.

    A line is quarantined whole when a token is not a non-negative integer; a line with a user and no
    items is accepted (the user has nothing in that split). The report counts lines per file.
    """
    src = Path(src)
    missing = [name for split, name in SPLIT_FILES.items() if split != "valid" and not (src / name).is_file()]
    if missing:
        raise TailorMindError(
            f"{src} lacks {' and '.join(missing)}; --src must be a LightGCN-format folder with train.txt and "
            "test.txt (valid.txt optional), one 'USER ITEM ITEM ...' line per user."
        )
    parts, bad, report = [], [], ValidationReport()
    for split, name in SPLIT_FILES.items():
        path = src / name
        if not path.is_file():
            continue
        pairs, rejected, lines = _parse(path)
        parts.append(pairs.append_column("split", pa.array([split] * pairs.num_rows, pa.string())))
        bad.append(rejected)
        report.files[name] = FileReport(lines, lines - rejected.num_rows, _reasons(rejected))
    pairs = pa.concat_tables(parts)
    item_ids = pc.unique(pairs["item"]).sort()
    user_ids = pc.unique(pairs["user"]).sort()
    items = pa.table(
        {
            "item_id": item_ids.cast(pa.string()),
            "title": pc.binary_join_element_wise("item ", item_ids.cast(pa.string()), ""),
            "text": pa.array([""] * len(item_ids), pa.string()),
            "tags": pa.array([[]] * len(item_ids), pa.list_(pa.string())),
            "image_uris": pa.array([[]] * len(item_ids), pa.list_(pa.string())),
            "video_uris": pa.array([[]] * len(item_ids), pa.list_(pa.string())),
        }
    )
    interactions = without_timestamps(
        pa.table(
            {
                "user_id": pairs["user"].cast(pa.string()),
                "item_id": pairs["item"].cast(pa.string()),
                "timestamp": pa.array(np.zeros(pairs.num_rows, np.int64)),
                "split": pairs["split"],
            }
        )
    )
    users = pa.table({"user_id": user_ids.cast(pa.string())})
    dataset = TailorBenchDataset(items, interactions, users, root=str(src), report=report)
    return dataset, pa.concat_tables(bad)


def _parse(path: Path) -> tuple[pa.Table, pa.Table, int]:
    """(user, item) pairs of the good lines, the bad lines with their reasons, and the number of lines."""
    users: list[np.ndarray] = []
    items: list[np.ndarray] = []
    bad: dict[str, list] = {"file": [], "line": [], "text": [], "reason": []}
    lines = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            lines += 1
            reason, ids = _line_ids(raw)
            if reason:
                text = raw.decode("utf-8", "replace").rstrip()
                for key, value in zip(bad, (path.name, number, text, reason), strict=True):
                    bad[key].append(value)
                continue
            users.append(np.full(len(ids) - 1, ids[0], np.int64))
            items.append(ids[1:])
    pairs = pa.table(
        {
            "user": pa.array(np.concatenate(users) if users else np.zeros(0, np.int64)),
            "item": pa.array(np.concatenate(items) if items else np.zeros(0, np.int64)),
        }
    )
    schema = pa.schema(
        [("file", pa.string()), ("line", pa.int64()), ("text", pa.string()), ("reason", pa.string())]
    )
    return pairs, pa.table(bad, schema=schema), lines


def _line_ids(raw: bytes) -> tuple[str, np.ndarray]:
    """('', ids) for a well-formed line, else (why it is not, empty)."""
    tokens = raw.split()
    if not tokens:
        return "empty line", np.zeros(0, np.int64)
    if not all(token.isdigit() for token in tokens):
        return "a token that is not a non-negative integer id", np.zeros(0, np.int64)
    ids = np.array([int(token) for token in tokens], dtype=object)
    if (ids >= MAX_ID).any():
        return f"an id of {MAX_ID} or more", np.zeros(0, np.int64)
    return "", ids.astype(np.int64)


def _reasons(rejected: pa.Table) -> dict[str, int]:
    counts = rejected.group_by("reason").aggregate([("reason", "count")])
    return dict(zip(counts["reason"].to_pylist(), counts["reason_count"].to_pylist(), strict=True))
