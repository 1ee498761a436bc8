"""Seeded hashes of ids: draws that depend on an id alone, so every part of the data draws alike."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pandas.util import hash_array


def id_hashes(ids: pa.Array | pa.ChunkedArray, salt: str) -> np.ndarray:
    """A uint64 hash of each id, keyed by ``salt`` (the same id always gets the same hash)."""
    key = salt[-16:].rjust(16, "0")
    return hash_array(np.asarray(ids.to_numpy(zero_copy_only=False), dtype=object), hash_key=key)


def mixed(values: np.ndarray) -> np.ndarray:
    """A uint64 hash of each number (a bijective mix: numbers that differ hash apart)."""
    return hash_array(np.asarray(values, dtype=np.uint64))
