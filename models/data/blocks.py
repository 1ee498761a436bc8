"""A dataset validated in blocks: each block of input rows is checked alone and its accepted rows are dealt
into buckets by user; each bucket, which then holds every row of its users, is finished alone (repeated
users dropped, leave-two-out splits assigned). No step holds more than a block or a bucket."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from models.data.hashing import id_hashes
from models.data.loader import coerce_table, reject_duplicates, validate_interactions, with_split
from models.data.quarantine import FileReport, RowRejections
from models.data.schema import USERS

ROW = "_row"  # a row's number in its input file: the first of repeated users and the split draw use it
BLOCKED_FILES = ("interactions", "users")  # the per-user files; items (the catalogue) are validated whole


def user_buckets(user_ids: pa.Array | pa.ChunkedArray, buckets: int) -> np.ndarray:
    """Each row's bucket, by a stable hash of its user id: every row of one user lands in the same one."""
    return (id_hashes(user_ids, "buckets") % np.uint64(buckets)).astype(np.int64)


def validate_block(
    name: str, raw: pa.Table, first_row: int, item_ids: pa.Array, strict: bool
) -> tuple[pa.Table, pa.Table | None, FileReport]:
    """(accepted rows with their input row numbers in ``ROW``, quarantined rows or None, counts) of a block
    of file ``name`` whose first row is the file's row ``first_row``."""
    if name == "interactions":
        table, rejections = validate_interactions(raw, item_ids, strict)
    else:
        table, rejections = coerce_table(f"{name}.parquet", raw, USERS, strict)
    accepted = rejections.accepted
    rows = np.arange(first_row, first_row + raw.num_rows, dtype=np.int64)
    kept = table.filter(pa.array(accepted)).append_column(ROW, pa.array(rows[accepted]))
    return kept, rejections.quarantined(), rejections.report()


def finish_bucket(
    name: str, bucket: pa.Table, timestamps: bool, strict: bool
) -> tuple[pa.Table, pa.Table | None, FileReport]:
    """(finished rows, quarantined rows or None, counts) of one bucket of file ``name``'s accepted rows:
    users repeated after their first row are rejected; interactions get their split."""
    bucket = bucket.sort_by(ROW)
    rows = bucket[ROW].to_numpy()
    table = bucket.drop_columns([ROW])
    if name == "interactions":
        return with_split(table, timestamps, rows), None, FileReport(table.num_rows, table.num_rows)
    rejections = RowRejections(f"{name}.parquet", table, strict)
    reject_duplicates(rejections, table["user_id"], "user_id")
    report = rejections.report()
    return table.filter(pa.array(rejections.accepted)), rejections.quarantined(), report
