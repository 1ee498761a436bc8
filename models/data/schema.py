"""Column types of the TailorBench files (CONTRACT.md) and what a missing optional column becomes."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

STRING_LIST = pa.list_(pa.string())


@dataclass(frozen=True)
class Column:
    """One expected column: its Arrow type, whether the file must have it, and whether nulls are bad."""

    name: str
    type: pa.DataType
    required: bool = False
    is_id: bool = False


ITEMS = (
    Column("item_id", pa.string(), required=True, is_id=True),
    Column("title", pa.string()),
    Column("text", pa.string()),
    Column("tags", STRING_LIST),
    Column("image_uris", STRING_LIST),
    Column("video_uris", STRING_LIST),
)
INTERACTIONS = (
    Column("user_id", pa.string(), required=True, is_id=True),
    Column("item_id", pa.string(), required=True, is_id=True),
    Column("timestamp", pa.int64(), required=True),
)
USERS = (Column("user_id", pa.string(), required=True, is_id=True),)

FILES = {"items": ITEMS, "interactions": INTERACTIONS, "users": USERS}
REQUIRED_FILES = ("items", "interactions")
VALID_SPLITS = ("train", "valid", "test")
