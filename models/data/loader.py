"""Load a TailorBench dataset directory, validating every row and quarantining the bad ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from models.data.coerce import ColumnTypeError, coerce
from models.data.quarantine import RowRejections, ValidationReport
from models.data.schema import FILES, INTERACTIONS, ITEMS, REQUIRED_FILES, USERS, VALID_SPLITS, Column
from models.data.split import assign_leave_two_out
from models.errors import TailorMindError


@dataclass
class TailorBenchDataset:
    """A validated dataset: items, interactions with a filled ``split`` column, optional users."""

    items: pa.Table
    interactions: pa.Table
    users: pa.Table | None
    root: str
    report: ValidationReport

    @property
    def has_timestamps(self) -> bool:
        """False when the interactions file says its timestamps carry no order (``without_timestamps``)."""
        return has_timestamps(self.interactions)

    def resolve_uri(self, uri: str) -> str:
        """Absolute form of a media URI; relative URIs are relative to the dataset directory."""
        return resolve_media_uri(self.root, uri)


TIMESTAMPS_KEY = b"tailormind.timestamps"


def without_timestamps(interactions: pa.Table) -> pa.Table:
    """``interactions`` marked as having no real timestamps (its ``timestamp`` column is a placeholder)."""
    metadata = {**(interactions.schema.metadata or {}), TIMESTAMPS_KEY: b"absent"}
    return interactions.replace_schema_metadata(metadata)


def has_timestamps(interactions: pa.Table) -> bool:
    """Whether the ``timestamp`` column orders the interactions (see ``without_timestamps``)."""
    return (interactions.schema.metadata or {}).get(TIMESTAMPS_KEY) != b"absent"


def resolve_media_uri(root: str, uri: str) -> str:
    """Absolute form of a media URI of the dataset at ``root`` (relative URIs are relative to it)."""
    if "://" in uri or uri.startswith("/"):
        return uri
    return f"{root.rstrip('/')}/{uri}"


def load_dataset(
    path: str | Path, *, quarantine_dir: Path | None = None, strict: bool = False
) -> TailorBenchDataset:
    """Read and validate ``items``/``interactions``/``users`` Parquet files under ``path``."""
    fs, root = _filesystem(str(path))
    report = ValidationReport()
    tables = {name: _read(fs, root, name, required=name in REQUIRED_FILES) for name in FILES}

    items_raw = tables["items"]
    assert items_raw is not None
    items, rejections = _coerce_table("items.parquet", items_raw, ITEMS, strict)
    duplicate = _duplicates_after_first(items["item_id"], rejections.accepted)
    rejections.reject(duplicate, "duplicate item_id", "item_id")
    items = _finish("items", items, rejections, quarantine_dir, report)

    inter_raw = tables["interactions"]
    assert inter_raw is not None
    timestamps = has_timestamps(inter_raw)
    interactions, rejections = _coerce_table("interactions.parquet", inter_raw, INTERACTIONS, strict)
    known = pc.is_in(interactions["item_id"], value_set=items["item_id"]).to_numpy(zero_copy_only=False)
    rejections.reject(~known, "unknown item_id", "item_id")
    if "split" in interactions.column_names:
        split_ok = pc.fill_null(
            pc.is_in(interactions["split"].cast(pa.string()), pa.array(VALID_SPLITS)), False
        )
        rejections.reject(pc.invert(split_ok), "invalid split (not train/valid/test)", "split")
    interactions = _finish("interactions", interactions, rejections, quarantine_dir, report)
    if "split" in interactions.column_names:
        interactions = interactions.set_column(
            interactions.schema.get_field_index("split"), "split", interactions["split"].cast(pa.string())
        )
    else:
        interactions = assign_leave_two_out(interactions, by_time=timestamps)
    if not timestamps:
        interactions = without_timestamps(interactions)

    users = None
    if tables["users"] is not None:
        users, rejections = _coerce_table("users.parquet", tables["users"], USERS, strict)
        rejections.reject(
            _duplicates_after_first(users["user_id"], rejections.accepted), "duplicate user_id", "user_id"
        )
        users = _finish("users", users, rejections, quarantine_dir, report)
    return TailorBenchDataset(items, interactions, users, root=str(path), report=report)


def write_dataset(dataset: TailorBenchDataset, out_dir: Path) -> None:
    """Write the accepted tables of a dataset as a TailorBench directory."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(dataset.items, out_dir / "items.parquet")
    pq.write_table(dataset.interactions, out_dir / "interactions.parquet")
    if dataset.users is not None:
        pq.write_table(dataset.users, out_dir / "users.parquet")


def _filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    if "://" in path:
        try:
            return pafs.FileSystem.from_uri(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise TailorMindError(f"cannot open dataset {path}: {exc}") from None
    local = Path(path).resolve()
    if not local.is_dir():
        raise TailorMindError(
            f"dataset directory {path} does not exist; create one with 'tailormind import movielens' "
            "or 'tailormind synth'."
        )
    return pafs.LocalFileSystem(), str(local)


def _read(fs: pafs.FileSystem, root: str, name: str, required: bool) -> pa.Table | None:
    path = f"{root}/{name}.parquet"
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        if required:
            raise TailorMindError(
                f"dataset {root} has no {name}.parquet; a TailorBench dataset needs items.parquet and "
                "interactions.parquet (see CONTRACT.md)."
            )
        return None
    if info.size == 0:
        raise TailorMindError(f"{path} is empty (0 bytes); write it again or remove it.")
    try:
        table = pq.read_table(path, filesystem=fs)
    except (pa.ArrowInvalid, OSError) as exc:
        raise TailorMindError(f"{path} is not a readable Parquet file: {exc}".replace("\n", " ")) from None
    if table.num_rows == 0 and required:
        raise TailorMindError(f"{path} has no rows; a dataset needs at least one item and one interaction.")
    return table


def _coerce_table(file_name: str, raw: pa.Table, columns: tuple[Column, ...], strict: bool):
    """Cast every expected column, flag values that did not cast and null ids; pass other columns through."""
    missing = [c.name for c in columns if c.required and c.name not in raw.column_names]
    if missing:
        raise TailorMindError(
            f"{file_name} lacks the required column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(it has: {', '.join(raw.column_names)})."
        )
    rejections = RowRejections(file_name, raw, strict)
    out = raw
    for spec in columns:
        if spec.name not in raw.column_names:
            out = out.append_column(spec.name, _default_column(spec, raw.num_rows))
            continue
        try:
            values, bad = coerce(raw[spec.name], spec)
        except ColumnTypeError as exc:
            raise TailorMindError(f"{file_name}: column '{spec.name}' {exc}; no row can be used.") from None
        reason = "non-UTF-8 text" if pa.types.is_binary(_value_type(raw[spec.name].type)) else "wrong type"
        rejections.reject(bad, f"{reason} in {spec.name}", spec.name)
        if spec.is_id:
            rejections.reject(pc.is_null(values), f"null {spec.name}", spec.name)
        elif spec.type == pa.string():
            values = pc.fill_null(values, "")
        elif spec.required:
            rejections.reject(pc.is_null(values), f"null {spec.name}", spec.name)
        out = out.set_column(out.schema.get_field_index(spec.name), spec.name, values)
    return out, rejections


def _value_type(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _value_type(kind.value_type)
    return kind.value_type if pa.types.is_dictionary(kind) else kind


def _default_column(spec: Column, rows: int) -> pa.Array:
    if spec.type == pa.string():
        return pa.array([""] * rows, pa.string())
    return pa.ListArray.from_arrays(pa.array(np.zeros(rows + 1, dtype=np.int32)), pa.array([], pa.string()))


def _duplicates_after_first(ids: pa.ChunkedArray | pa.Array, considered: np.ndarray) -> np.ndarray:
    """Rows whose id already appeared in an earlier considered row."""
    codes = pc.dictionary_encode(ids).combine_chunks().indices.to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(considered)
    _, first = np.unique(codes[rows], return_index=True)
    dup = np.zeros(len(codes), dtype=bool)
    dup[rows] = True
    dup[rows[first]] = False
    return dup


def _finish(name, table, rejections, quarantine_dir, report) -> pa.Table:
    rejections.write(quarantine_dir)
    report.files[name] = rejections.report()
    accepted = table.filter(pa.array(rejections.accepted))
    if accepted.num_rows == 0 and table.num_rows > 0:
        raise TailorMindError(
            f"{name}.parquet: none of its {table.num_rows} rows is usable ({report.summary()}); "
            "nothing can be trained on it."
        )
    return accepted
