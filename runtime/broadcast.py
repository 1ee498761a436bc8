"""Small tables every task of a stage reads (item cards, caption cache): put once, looked up per process.

A table is read into the object store by a Ray task, so the driver holds only its reference; a worker
process turns it into a dict once and keeps it for the later tasks it runs (Ray reuses task workers).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def _read(path: str, columns: list[str]) -> pa.Table:
    return pq.read_table(path, columns=columns)


def broadcast_table(path: str, columns: list[str]) -> Any:
    """A reference to the Parquet file or folder ``path`` (those columns) in the object store."""
    import ray

    return ray.remote(_read).options(num_cpus=0.25).remote(path, columns)


def table_of(ref: Any) -> pa.Table:
    """The table behind a reference from ``broadcast_table`` (zero-copy from the object store)."""
    import ray

    return ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref


@lru_cache(maxsize=4)
def _mapping(ref: Any, key: str, value: str) -> dict[str, Any]:
    table = table_of(ref)
    return dict(zip(table[key].to_pylist(), table[value].to_pylist(), strict=True))


def mapping_of(ref: Any, key: str, value: str) -> dict[str, Any]:
    """``key`` -> ``value`` of a broadcast table (built once per worker process) or of a plain table."""
    if isinstance(ref, pa.Table):
        return dict(zip(ref[key].to_pylist(), ref[value].to_pylist(), strict=True))
    return _mapping(ref, key, value)
