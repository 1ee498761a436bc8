"""Catalogue card embeddings: each distinct card embedded once per embedder, kept across runs.

``RUN/cache/card_vectors/`` is content-keyed (``models.embedding.card_key``) like the caption cache: a run
embeds, in a Ray Data actor pool, only the cards that no earlier run embedded and adds them as one folder of
Parquet files (written under a dot-name, then renamed, so a killed run leaves nothing half-written). Actors
that search the whole catalogue get it as one (item_id, card, vector) table in the object store, instead of
each embedding every card itself.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.llm_step import LIGHT
from models.embedding import card_key
from models.vectors import vector_column
from runtime.artifacts import read_catalogue
from runtime.broadcast import table_of

EMBED_BATCH = 256


# cards per actor call
def uncached_cards(batch: pa.Table, cached: Any) -> pa.Table:
    """(key, card) of the batch's distinct cards whose key the cache (a key table, or None) lacks."""
    cards = batch["card"].to_pylist()
    keys = [card_key(card) for card in cards]
    _, first = np.unique(keys, return_index=True)
    table = pa.table({"key": pa.array(keys, pa.string()), "card": pa.array(cards, pa.string())})
    table = table.take(np.sort(first).astype(np.int64))
    if cached is None:
        return table
    return table.filter(pc.invert(pc.is_in(table["key"], value_set=table_of(cached)["key"])))


class CardEmbedder:
    """A ``map_batches`` actor: the unit embedding of each (key, card) row."""

    def __init__(self, device: str):
        from models.embedding import TextEmbedder

        self.embedder = TextEmbedder(device=device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """(key, vector) of each row."""
        vectors = self.embedder.embed(batch["card"].to_pylist())
        return pa.table({"key": batch["key"], "vector": vector_column(vectors)})


def catalogue_vectors(items: str, cache: Path, device: str, workers: int) -> Any:
    """A reference to (item_id, card, vector) of each item of ``items``; uncached cards are embedded first."""
    import ray
    import ray.data

    files = _cache_files(cache)
    cached = ray.remote(_cached_keys).options(**LIGHT).remote(files) if files else None
    staging = cache / f".run-{uuid.uuid4().hex[:12]}"
    todo = (
        read_catalogue(items, ["card"])
        .map_batches(uncached_cards, fn_kwargs={"cached": cached}, batch_format="pyarrow", **LIGHT)
        .materialize()
    )  # (key, card) rows only; a fully cached catalogue starts no embedder
    if todo.count():
        todo.map_batches(
            CardEmbedder,
            fn_constructor_kwargs={"device": device},
            batch_format="pyarrow",
            batch_size=EMBED_BATCH,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
            num_gpus=1 if device.startswith("cuda") else 0,
        ).write_parquet(str(staging.resolve()))
        staging.rename(cache / staging.name.lstrip("."))
    return ray.remote(_item_vectors).options(num_cpus=1).remote(items, _cache_files(cache))


def _cache_files(cache: Path) -> list[str]:
    """The cache's Parquet files, outside unfinished (dot-named) folders."""
    if not cache.is_dir():
        return []
    return sorted(str(p) for p in cache.glob("*/*.parquet") if not p.parent.name.startswith("."))


def _cached_keys(files: list[str]) -> pa.Table:
    """The keys the cache holds."""
    return pa.concat_tables([pq.read_table(f, columns=["key"]) for f in files])


def _item_vectors(items: str, files: list[str]) -> pa.Table:
    """(item_id, card, vector) of every item, in the catalogue's order."""
    catalogue = pq.read_table(items, columns=["item_id", "card"])
    vectors = pa.concat_tables([pq.read_table(f) for f in files]) if files else None
    if vectors is None:
        raise RuntimeError(f"no card vectors were written for the {catalogue.num_rows} items of {items}")
    keys = vectors["key"].to_numpy(zero_copy_only=False)
    unique, first = np.unique(keys, return_index=True)
    wanted = np.array([card_key(card) for card in catalogue["card"].to_pylist()], dtype=object)
    where = np.searchsorted(unique, wanted).clip(max=len(unique) - 1)
    missing = unique[where] != wanted
    if missing.any():
        raise RuntimeError(f"{int(missing.sum())} item cards of {items} have no vector in the cache")
    return catalogue.append_column("vector", vectors["vector"].take(pa.array(first[where])))
