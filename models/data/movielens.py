"""Convert MovieLens (ml-latest-small layout) into the TailorBench format."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from models.data.loader import TailorBenchDataset
from models.data.quarantine import FileReport, ValidationReport
from models.errors import TailorMindError

NO_GENRES = "(no genres listed)"
GENRE_RANK = -(2**62)  # genres come before every user tag, which rank by minus their use count


def import_movielens(src: str | Path) -> TailorBenchDataset:
    """Items from movies.csv (tags = genres + normalised user tags), interactions from every rating."""
    src = Path(src)
    movies = _read_csv(
        src / "movies.csv", {"movieId": pa.int64(), "title": pa.string(), "genres": pa.string()}
    )
    ratings = _read_csv(
        src / "ratings.csv",
        {"userId": pa.int64(), "movieId": pa.int64(), "rating": pa.float32(), "timestamp": pa.int64()},
    )
    tags = _read_csv(
        src / "tags.csv",
        {"userId": pa.int64(), "movieId": pa.int64(), "tag": pa.string(), "timestamp": pa.int64()},
    )
    genres = pc.split_pattern(movies["genres"], "|")
    genre_text = pc.binary_join(genres, ", ")
    has_genres = pc.not_equal(movies["genres"], NO_GENRES)
    text = pc.if_else(
        has_genres,
        pc.binary_join_element_wise(movies["title"], ". Genres: ", genre_text, ".", ""),
        pc.binary_join_element_wise(movies["title"], ".", ""),
    )
    items = pa.table(
        {
            "item_id": movies["movieId"].cast(pa.string()),
            "title": movies["title"],
            "text": text,
            "tags": _item_tags(movies["movieId"], genres, tags),
            "image_uris": pa.array([[]] * movies.num_rows, pa.list_(pa.string())),
            "video_uris": pa.array([[]] * movies.num_rows, pa.list_(pa.string())),
        }
    )
    interactions = pa.table(
        {
            "user_id": ratings["userId"].cast(pa.string()),
            "item_id": ratings["movieId"].cast(pa.string()),
            "timestamp": ratings["timestamp"],
            "rating": ratings["rating"],
        }
    )
    users = pa.table({"user_id": pc.unique(ratings["userId"]).sort().cast(pa.string())})
    tables = {"items": items, "interactions": interactions, "users": users}
    report = ValidationReport({name: FileReport(t.num_rows, t.num_rows) for name, t in tables.items()})
    return TailorBenchDataset(items, interactions, users, root=str(src), report=report)


def normalise_tags(tags: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Lower-case, trimmed, inner whitespace collapsed."""
    lowered = pc.utf8_lower(pc.utf8_trim_whitespace(tags))
    return pc.replace_substring_regex(lowered, r"\s+", " ")


def _item_tags(movie_ids: pa.ChunkedArray, genres: pa.ChunkedArray, tags: pa.Table) -> pa.Array:
    """Per movie: its genres, then user tags by how often they were applied, each tag once."""
    lengths = pc.list_value_length(genres)
    genre_rows = pa.table(
        {
            "movieId": pc.list_parent_indices(genres),
            "tag": normalise_tags(pc.list_flatten(genres)),
            "rank": pa.array([GENRE_RANK] * int(pc.sum(lengths).as_py()), pa.int64()),
        }
    )
    genre_rows = genre_rows.set_column(0, "movieId", pc.take(movie_ids, genre_rows["movieId"]))
    user_tags = pa.table({"movieId": tags["movieId"], "tag": normalise_tags(tags["tag"])})
    counted = user_tags.group_by(["movieId", "tag"]).aggregate([("tag", "count")])
    counted = pa.table(
        {"movieId": counted["movieId"], "tag": counted["tag"], "rank": pc.negate(counted["tag_count"])}
    )
    rows = pa.concat_tables([genre_rows, counted])
    rows = rows.filter(pc.and_(pc.not_equal(rows["tag"], NO_GENRES), pc.not_equal(rows["tag"], "")))
    rows = rows.group_by(["movieId", "tag"]).aggregate([("rank", "min")])
    rows = rows.take(
        pc.sort_indices(rows, [("movieId", "ascending"), ("rank_min", "ascending"), ("tag", "ascending")])
    )
    grouped = rows.group_by("movieId", use_threads=False).aggregate([("tag", "list")])
    lookup = pc.index_in(movie_ids, value_set=grouped["movieId"])
    per_movie = pc.take(grouped["tag_list"], lookup)
    return pc.coalesce(per_movie, pa.scalar([], pa.list_(pa.string()))).combine_chunks()


def _read_csv(path: Path, types: dict[str, pa.DataType]) -> pa.Table:
    if not path.is_file():
        raise TailorMindError(
            f"{path} not found; --src must be a MovieLens folder with movies.csv, ratings.csv and tags.csv."
        )
    try:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
    except (pa.ArrowInvalid, OSError) as exc:
        raise TailorMindError(f"{path} is not a MovieLens CSV file: {exc}".replace("\n", " ")) from None
    missing = [c for c in types if c not in table.column_names]
    if missing:
        raise TailorMindError(f"{path} lacks the column(s) {', '.join(missing)}; is it a MovieLens file?")
    return table.select(list(types))
