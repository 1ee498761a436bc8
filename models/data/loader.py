"""Load a TailorBench dataset directory, validating every row and quarantining the bad ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
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
    path: str | Path, *, quarantine_dir: Path | None = None, strict: bool = False, part: str | None = None
) -> TailorBenchDataset:
    """Read and validate ``items``/``interactions``/``users`` Parquet files under ``path``; with ``part``
    (one of ``interaction_parts``), the items and that part's interactions only."""
    fs, root = open_filesystem(str(path))
    report = ValidationReport()
    names = ("items",) if part else FILES
    tables = {name: read_file(fs, root, name, required=name in REQUIRED_FILES) for name in names}
    if part:
        tables["interactions"] = pq.read_table(part, filesystem=fs)

    items_raw = tables["items"]
    assert items_raw is not None
    items, rejections = validate_items(items_raw, strict)
    items = keep_accepted("items", items, rejections, quarantine_dir, report)

    inter_raw = tables["interactions"]
    assert inter_raw is not None
    timestamps = has_timestamps(inter_raw)
    interactions, rejections = validate_interactions(inter_raw, items["item_id"], strict)
    accepted_rows = np.flatnonzero(rejections.accepted)
    interactions = keep_accepted("interactions", interactions, rejections, quarantine_dir, report)
    interactions = with_split(interactions, timestamps, accepted_rows)
    users = None
    if tables.get("users") is not None:
        users, rejections = coerce_table("users.parquet", tables["users"], USERS, strict)
        reject_duplicates(rejections, users["user_id"], "user_id")
        users = keep_accepted("users", users, rejections, quarantine_dir, report)
    return TailorBenchDataset(items, interactions, users, root=str(path), report=report)


def load_items(path: str | Path) -> pa.Table:
    """The accepted catalogue rows of dataset ``path``, in the order every encoding indexes them."""
    fs, root = open_filesystem(str(path))
    raw = read_file(fs, root, "items", required=True)
    assert raw is not None
    items, rejections = validate_items(raw, strict=False)
    return items.filter(pa.array(rejections.accepted))


def interaction_parts(path: str | Path) -> list[str]:
    """The files of dataset ``path``'s interactions: its parts when the data stage wrote it (a folder, each
    part holding every row of its users), else the one file."""
    fs, root = open_filesystem(str(path))
    location = f"{root}/interactions.parquet"
    if fs.get_file_info(location).type != pafs.FileType.Directory:
        return [location]
    found = fs.get_file_info(pafs.FileSelector(location))
    return sorted(info.path for info in found if info.path.endswith(".parquet"))


def validate_items(raw: pa.Table, strict: bool) -> tuple[pa.Table, RowRejections]:
    """Items coerced to their types; bad values, null and repeated item ids rejected (the first kept)."""
    items, rejections = coerce_table("items.parquet", raw, ITEMS, strict)
    reject_duplicates(rejections, items["item_id"], "item_id")
    return items, rejections


def validate_interactions(
    raw: pa.Table, item_ids: pa.Array | pa.ChunkedArray, strict: bool
) -> tuple[pa.Table, RowRejections]:
    """Interactions coerced to their types; bad values, unknown items and invalid splits rejected."""
    interactions, rejections = coerce_table("interactions.parquet", raw, INTERACTIONS, strict)
    known = pc.is_in(interactions["item_id"], value_set=item_ids).to_numpy(zero_copy_only=False)
    rejections.reject(~known, "unknown item_id", "item_id")
    if "split" in interactions.column_names:
        split_ok = pc.fill_null(
            pc.is_in(interactions["split"].cast(pa.string()), pa.array(VALID_SPLITS)), False
        )
        rejections.reject(pc.invert(split_ok), "invalid split (not train/valid/test)", "split")
    return interactions, rejections


def with_split(interactions: pa.Table, timestamps: bool, row_numbers: np.ndarray | None = None) -> pa.Table:
    """Accepted interactions with a string ``split``: the given one, else leave-two-out (``row_numbers``:
    each row's number in the input file, what a random held-out draw hashes without timestamps)."""
    if "split" in interactions.column_names:
        index = interactions.schema.get_field_index("split")
        interactions = interactions.set_column(index, "split", interactions["split"].cast(pa.string()))
    else:
        interactions = assign_leave_two_out(interactions, by_time=timestamps, row_numbers=row_numbers)
    return interactions if timestamps else without_timestamps(interactions)


def reject_duplicates(rejections: RowRejections, ids: pa.ChunkedArray | pa.Array, column: str) -> None:
    """Reject every accepted row whose id an earlier accepted row already has."""
    rejections.reject(_duplicates_after_first(ids, rejections.accepted), f"duplicate {column}", column)


def write_dataset(dataset: TailorBenchDataset, out_dir: Path) -> None:
    """Write the accepted tables of a dataset as a TailorBench directory."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(dataset.items, out_dir / "items.parquet")
    pq.write_table(dataset.interactions, out_dir / "interactions.parquet")
    if dataset.users is not None:
        pq.write_table(dataset.users, out_dir / "users.parquet")


def open_filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of a dataset location (local folder or URI) and its root path there."""
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


def read_file(fs: pafs.FileSystem, root: str, name: str, required: bool) -> pa.Table | None:
    """The whole of file ``name`` (None when an optional file is absent), or a one-paragraph error."""
    path = _checked_path(fs, root, name, required)
    if path is None:
        return None
    try:
        table = pq.read_table(path, filesystem=fs)
    except (pa.ArrowInvalid, OSError) as exc:
        raise TailorMindError(f"{path} is not a readable Parquet file: {exc}".replace("\n", " ")) from None
    _check_rows(path, table.num_rows, required)
    return table


def open_file(fs: pafs.FileSystem, root: str, name: str, required: bool) -> pads.Dataset | None:
    """File (or folder of parts) ``name`` opened for reading in blocks, its row count checked from the
    Parquet metadata alone; None when an optional file is absent."""
    path = _checked_path(fs, root, name, required)
    if path is None:
        return None
    try:
        dataset = pads.dataset(path, filesystem=fs, format="parquet")
        rows = dataset.count_rows()
    except (pa.ArrowInvalid, OSError) as exc:
        raise TailorMindError(f"{path} is not a readable Parquet file: {exc}".replace("\n", " ")) from None
    _check_rows(path, rows, required)
    return dataset


def _checked_path(fs: pafs.FileSystem, root: str, name: str, required: bool) -> str | None:
    """Path of file ``name`` under ``root``; None when an optional file is absent; errors when a required
    one is, or when it is empty."""
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
    return path


def _check_rows(path: str, rows: int, required: bool) -> None:
    if rows == 0 and required:
        raise TailorMindError(f"{path} has no rows; a dataset needs at least one item and one interaction.")


def coerce_table(
    file_name: str, raw: pa.Table, columns: tuple[Column, ...], strict: bool
) -> tuple[pa.Table, RowRejections]:
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


def keep_accepted(
    name: str,
    table: pa.Table,
    rejections: RowRejections,
    quarantine_dir: Path | None,
    report: ValidationReport,
) -> pa.Table:
    """The accepted rows of file ``name``; its rejected rows quarantined and its counts in ``report``."""
    rejections.write(quarantine_dir)
    report.files[name] = rejections.report()
    check_usable(name, report)
    return table.filter(pa.array(rejections.accepted))


def check_usable(name: str, report: ValidationReport) -> None:
    """A one-paragraph error when file ``name`` had rows and none was accepted."""
    counts = report.files[name]
    if counts.accepted_rows == 0 and counts.input_rows > 0:
        raise TailorMindError(
            f"{name}.parquet: none of its {counts.input_rows} rows is usable ({report.summary()}); "
            "nothing can be trained on it."
        )
