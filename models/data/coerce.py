"""Per-value coercion of columns to their expected types: what casts is kept, what does not is flagged."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from models.data.schema import STRING_LIST, Column

_CHUNK = 1 << 16
_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d")


class ColumnTypeError(ValueError):
    """The column as a whole has a type that cannot stand for the expected one."""


def coerce(column: pa.ChunkedArray, spec: Column) -> tuple[pa.Array, np.ndarray]:
    """Column cast to ``spec.type`` (bad values as null) and a mask of the values that could not be cast."""
    array = column.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if spec.type == pa.string():
        return _to_string(array)
    if spec.type == pa.int64():
        return _to_seconds(array)
    if spec.type == STRING_LIST:
        return _to_string_list(array)
    raise AssertionError(f"no coercion for {spec.type}")


def _to_string(array: pa.Array) -> tuple[pa.Array, np.ndarray]:
    if pa.types.is_null(array.type):
        return array.cast(pa.string()), np.zeros(len(array), dtype=bool)
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return array.cast(pa.string()), np.zeros(len(array), dtype=bool)
    if pa.types.is_integer(array.type):
        return array.cast(pa.string()), np.zeros(len(array), dtype=bool)
    if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type):
        return _decode_utf8(array)
    raise ColumnTypeError(f"has type {array.type}, expected string")


def _decode_utf8(array: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Binary to UTF-8 strings; chunks that fail the fast cast are checked value by value."""
    pieces, bad = [], np.zeros(len(array), dtype=bool)
    for start in range(0, len(array), _CHUNK):
        chunk = array.slice(start, _CHUNK)
        try:
            pieces.append(chunk.cast(pa.string()))
        except pa.ArrowInvalid:
            values = []
            for offset, value in enumerate(chunk.to_pylist()):
                try:
                    values.append(None if value is None else value.decode("utf-8"))
                except UnicodeDecodeError:
                    values.append(None)
                    bad[start + offset] = True
            pieces.append(pa.array(values, pa.string()))
    return pa.concat_arrays(pieces) if pieces else pa.array([], pa.string()), bad


def _to_seconds(array: pa.Array) -> tuple[pa.Array, np.ndarray]:
    kind = array.type
    if pa.types.is_integer(kind) or pa.types.is_null(kind):
        return array.cast(pa.int64()), np.zeros(len(array), dtype=bool)
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        seconds = array.cast(pa.timestamp("s", tz=getattr(kind, "tz", None)), safe=False)
        return seconds.cast(pa.int64()), np.zeros(len(array), dtype=bool)
    if pa.types.is_floating(kind):
        whole = pc.and_(pc.is_finite(array), pc.equal(pc.floor(array), array))
        good = pc.fill_null(whole, False)
        values = pc.if_else(good, array, None).cast(pa.int64())
        return values, _bad_mask(array, good)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _parse_seconds(pc.utf8_trim_whitespace(array.cast(pa.string())))
    raise ColumnTypeError(f"has type {kind}, expected int64 seconds or a timestamp")


def _parse_seconds(text: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Strings holding integer seconds or an ISO-8601 date/time (UTC) become seconds; others are flagged."""
    digits = pc.fill_null(pc.match_substring_regex(text, r"^-?\d{1,18}$"), False)
    values = pc.if_else(digits, text, None).cast(pa.int64())
    for fmt in _TIME_FORMATS:
        parsed = pc.strptime(text, format=fmt, unit="s", error_is_null=True).cast(pa.int64())
        values = pc.coalesce(values, parsed)
    return values, _bad_mask(text, pc.is_valid(values))


def _bad_mask(array: pa.Array, good: pa.Array) -> np.ndarray:
    """Values present but not castable (nulls are judged separately)."""
    present = pc.is_valid(array)
    return pc.and_(present, pc.invert(good)).to_numpy(zero_copy_only=False)


def _to_string_list(array: pa.Array) -> tuple[pa.Array, np.ndarray]:
    kind = array.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        raise ColumnTypeError(f"has type {kind}, expected list<string>")
    if array.null_count:
        array = pc.coalesce(array, pa.scalar([], kind))
    values, bad_values = _to_string(array.flatten())
    offsets = pc.subtract(array.offsets, array.offsets[0]).cast(pa.int32())
    rebuilt = pa.ListArray.from_arrays(offsets, pc.fill_null(values, ""))
    if bad_values.any():
        row_of_value = np.repeat(np.arange(len(array)), np.diff(offsets.to_numpy()))
        bad = np.zeros(len(array), dtype=bool)
        bad[row_of_value[bad_values]] = True
        return rebuilt, bad
    return rebuilt, np.zeros(len(array), dtype=bool)
