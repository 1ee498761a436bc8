"""Embeddings as Arrow columns: a [rows, dim] matrix as a list<float> column, and back."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def vector_column(matrix: np.ndarray) -> pa.ListArray:
    """The rows of a [rows, dim] matrix as a list<float> column (the inverse of ``embedding_matrix``)."""
    rows, dim = matrix.shape
    offsets = pa.array(np.arange(0, rows * dim + 1, dim, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(matrix, np.float32).ravel()))


def embedding_matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A list<float> column of equal-length rows as a [rows, dim] float32 array."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = array.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return values.reshape(len(array), -1) if len(array) else values.reshape(0, 0)
