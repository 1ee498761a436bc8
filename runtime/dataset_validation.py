"""A dataset validated on Ray in blocks of input rows, finished in buckets of users (``models.data.blocks``).

The catalogue is validated in one task (its item ids are what every block checks against, as the top-K actor
holds every item's vector); each block of about ``BLOCK_ROWS`` input rows of ``interactions`` and ``users`` is
one task that writes its quarantined rows and deals its accepted ones into bucket pieces; each bucket of
about ``BUCKET_ROWS`` rows is one task that writes one part of the output file. The driver holds the plan
(row groups from the Parquet metadata) and the counts.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import ray

from models.data.blocks import BLOCKED_FILES, finish_bucket, user_buckets, validate_block
from models.data.loader import (
    check_usable,
    has_timestamps,
    keep_accepted,
    open_file,
    open_filesystem,
    read_file,
    validate_items,
)
from models.data.quarantine import FileReport, ValidationReport
from runtime.tasks import get

BLOCK_ROWS = 1_000_000  # input rows a block task reads (whole row groups: a larger row group is one block)
BUCKET_ROWS = 2_000_000  # accepted rows a bucket task holds, on average
QUARANTINE = "quarantine"
PIECES = "_buckets"  # the blocks' bucket pieces, removed once the buckets are written


def validate_dataset(source: str, out: Path, strict: bool) -> ValidationReport:
    """Validate dataset ``source`` into ``out`` (items.parquet, interactions.parquet/ and users.parquet/
    folders of parts, quarantine/); returns the per-file counts."""
    fs, root = open_filesystem(source)
    out.mkdir(parents=True, exist_ok=True)
    report = ValidationReport()
    item_ids, items_counts = _items.options(num_returns=2).remote(source, str(out), strict)
    report.files["items"] = get(items_counts)
    for name in BLOCKED_FILES:
        dataset = open_file(fs, root, name, required=name == "interactions")
        if dataset is not None:
            _validate_file(name, dataset, source, out, item_ids, strict, report)
            check_usable(name, report)
    shutil.rmtree(out / PIECES, ignore_errors=True)
    return report


def _validate_file(
    name: str,
    dataset: pads.Dataset,
    source: str,
    out: Path,
    item_ids: Any,
    strict: bool,
    report: ValidationReport,
) -> None:
    """Blocks of file ``name``, then its buckets; their counts added to ``report``."""
    blocks = _blocks(dataset)
    rows = sum(block_rows for _, _, _, block_rows in blocks)
    buckets = max(1, math.ceil(rows / BUCKET_ROWS))
    pieces = out / PIECES / name
    block_counts = get(
        [
            _block.remote(name, source, path, groups, first, item_ids, strict, buckets, str(out), index)
            for index, (path, groups, first, _) in enumerate(blocks)
        ]
    )
    timestamps = has_timestamps(dataset.schema.empty_table())
    bucket_counts = get(
        [
            _bucket.remote(name, str(pieces / f"bucket={b:05d}"), timestamps, strict, str(out), b)
            for b in range(buckets)
        ]
    )
    for counts in block_counts:
        report.add(name, FileReport(counts.input_rows, 0, counts.reasons))
    for counts in bucket_counts:
        report.add(name, FileReport(0, counts.accepted_rows, counts.reasons))


def _blocks(dataset: pads.Dataset) -> list[tuple[str, list[int], int, int]]:
    """(file, row groups, first row, rows) of each block: consecutive row groups up to ``BLOCK_ROWS`` rows."""
    blocks: list[tuple[str, list[int], int, int]] = []
    first = 0
    for fragment in dataset.get_fragments():
        groups: list[int] = []
        rows = 0
        for group in fragment.row_groups:
            if groups and rows + group.num_rows > BLOCK_ROWS:
                blocks.append((fragment.path, groups, first, rows))
                first, groups, rows = first + rows, [], 0
            groups.append(group.id)
            rows += group.num_rows
        if groups:
            blocks.append((fragment.path, groups, first, rows))
            first += rows
    return blocks


@ray.remote(num_cpus=1)
def _items(source: str, out: str, strict: bool) -> tuple[pa.Array, FileReport]:
    """Validate the catalogue into OUT/items.parquet; (accepted item ids, counts)."""
    fs, root = open_filesystem(source)
    raw = read_file(fs, root, "items", required=True)
    assert raw is not None
    items, rejections = validate_items(raw, strict)
    counts = ValidationReport()
    items = keep_accepted("items", items, rejections, Path(out) / QUARANTINE, counts)
    pq.write_table(items, Path(out) / "items.parquet")
    return items["item_id"].combine_chunks(), counts.files["items"]


@ray.remote(num_cpus=1)
def _block(
    name: str,
    source: str,
    path: str,
    groups: list[int],
    first: int,
    item_ids: pa.Array,
    strict: bool,
    buckets: int,
    out: str,
    index: int,
) -> FileReport:
    """One block of file ``name``: its quarantined rows written, its accepted rows dealt into buckets."""
    fs, _ = open_filesystem(source)
    raw = pq.ParquetFile(path, filesystem=fs).read_row_groups(groups)
    kept, quarantined, counts = validate_block(name, raw, first, item_ids, strict)
    if quarantined is not None:
        _write(quarantined, Path(out) / QUARANTINE / f"{name}.parquet" / f"block-{index:05d}.parquet")
    bucket = user_buckets(kept["user_id"], buckets)
    for b in range(buckets):
        piece = kept.filter(pa.array(bucket == b))
        if piece.num_rows:
            _write(piece, Path(out) / PIECES / name / f"bucket={b:05d}" / f"block-{index:05d}.parquet")
    pa.default_memory_pool().release_unused()  # a reused worker keeps only what its next task needs
    return counts


@ray.remote(num_cpus=1)
def _bucket(name: str, pieces: str, timestamps: bool, strict: bool, out: str, index: int) -> FileReport:
    """One bucket of file ``name``: its rows finished into OUT/NAME.parquet/part-INDEX.parquet."""
    if not Path(pieces).is_dir():
        return FileReport(0)
    bucket = pq.read_table(pieces, partitioning=None)
    table, quarantined, counts = finish_bucket(name, bucket, timestamps, strict)
    if quarantined is not None:
        _write(quarantined, Path(out) / QUARANTINE / f"{name}.parquet" / f"bucket-{index:05d}.parquet")
    _write(table, Path(out) / f"{name}.parquet" / f"part-{index:05d}.parquet")
    pa.default_memory_pool().release_unused()
    return counts


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
