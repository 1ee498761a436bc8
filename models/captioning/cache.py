"""The content-keyed caption cache (``RUN/cache/captions/``): one Parquet file per run, read for lookups.

A run adds its error-free new captions as one file, written under a dot-name and then renamed, so a rerun or
a larger cohort only captions what is new; equal content keys mean equal captions (``content_key``).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.captioning.requests import CAPTION_COLUMNS
from models.captioning.rows import STEP_ROLES
from models.llm.config import LLMConfig
from models.llm.rows import summed_tallies

CACHE_COLUMNS = ["content_key", *CAPTION_COLUMNS]
CACHE_SCHEMA = pa.schema([(name, pa.string()) for name in CACHE_COLUMNS])


def cache_files(cache: Path) -> list[str]:
    """The cache's Parquet files (none when the folder does not exist yet)."""
    return sorted(str(p) for p in cache.glob("*.parquet")) if cache.is_dir() else []


def cached_captions(files: list[str]) -> pa.Table:
    """The cache as (content_key, captions as JSON), for the plan's lookups."""
    rows = pa.concat_tables([pq.read_table(f).cast(CACHE_SCHEMA) for f in files]).to_pylist() if files else []
    captions = [json.dumps({c: row.get(c) for c in CAPTION_COLUMNS}) for row in rows]
    keys = [row["content_key"] for row in rows]
    return pa.table({"content_key": pa.array(keys, pa.string()), "captions": pa.array(captions, pa.string())})


def summarise_and_cache(items: str, cache: str, llm: LLMConfig) -> dict[str, Any]:
    """Counts of the written items; their error-free new captions are appended to the cache."""
    written = pq.read_table(items, columns=["captioned", "from_cache", "errors", "content_key", "llm_calls"])
    fresh = written.filter(
        pc.and_(
            pc.and_(written["captioned"], pc.invert(written["from_cache"])),
            pc.equal(pc.list_value_length(written["errors"]), 0),
        )
    )
    add_to_cache(Path(items), fresh["content_key"], Path(cache))
    errors = pc.greater(pc.list_value_length(written["errors"]), 0)
    return {
        "items": written.num_rows,
        "captioned": int(pc.sum(written["captioned"]).as_py() or 0),
        "from_cache": int(pc.sum(written["from_cache"]).as_py() or 0),
        "newly_cached": fresh.num_rows,
        "items_with_errors": int(pc.sum(errors).as_py() or 0),
        "llm_calls": summed_tallies(written["llm_calls"].to_pylist(), llm, STEP_ROLES),
    }


def add_to_cache(items: Path, keys: pa.ChunkedArray, cache: Path) -> None:
    """Append this run's error-free new captions to the cache as one file, written then renamed."""
    if not len(keys):
        return
    table = pq.read_table(items, columns=CACHE_COLUMNS)
    table = table.filter(pc.is_in(table["content_key"], value_set=keys.combine_chunks()))
    cache.mkdir(parents=True, exist_ok=True)
    name = f"part-{uuid.uuid4().hex[:12]}.parquet"
    tmp = cache / f".{name}.tmp"
    pq.write_table(table.cast(CACHE_SCHEMA), tmp)
    shutil.move(tmp, cache / name)
