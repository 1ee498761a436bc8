"""Stage ``captions``: each needed item described once per modality by the captioner VLM; every item's card.

One Ray Data pipeline over the catalogue: items in scope (the cohort's, all, or none) that the content-keyed
cache does not hold get their text, image and video-segment requests, a second step turns the two video
segments into one description, and every item leaves with its card (title + captions, or its own text).
``RUN/captions/items.parquet/`` holds one row per catalogue item; error-free new captions are added to the
cache (``RUN/cache/captions/``, one Parquet file per run), so a rerun or a larger cohort only captions what
is new.
"""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.broadcast import broadcast_table, mapping_of, table_of
from jobs.llm_step import LIGHT, LLMStep, request_json, row_answers, summed_tallies, tally
from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult
from models.captioning import CAPTION_COLUMNS, caption_requests, content_key, video_request
from models.config import TailorMindConfig
from models.data.loader import resolve_media_uri
from models.llm.config import LLMConfig
from models.profiling.evidence import item_card
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

ITEMS = "items.parquet"  # a folder of Parquet files (one per block)
_CACHE_COLUMNS = ["content_key", *CAPTION_COLUMNS]
_CACHE_SCHEMA = pa.schema([(name, pa.string()) for name in _CACHE_COLUMNS])
# Items per block of a catalogue read: blocks follow the catalogue's size, not the cluster's CPU count (a
# small catalogue split 2 x CPUs ways starts a worker process per sliver of it).
ITEMS_PER_BLOCK = 4096


def in_scope_batch(batch: pa.Table, wanted: Any, keep: bool) -> pa.Table:
    """The items of ``batch`` that are (``keep``) or are not in the captioning scope (None: every item)."""
    if wanted is None:
        return batch if keep else batch.slice(0, 0)
    scoped = pc.is_in(batch["item_id"], value_set=table_of(wanted)["item_id"])
    return batch.filter(scoped if keep else pc.invert(scoped))


def plan_batch(
    batch: pa.Table, cache: Any, model_key: str, data_root: str, frames_per_segment: int
) -> pa.Table:
    """Each item's content key, its cached captions, or (not cached) its text and media requests."""
    cached = mapping_of(cache, "content_key", "captions") if cache is not None else {}
    columns: dict[str, list[Any]] = {name: [] for name in _PLAN_TYPES}
    for item in batch.to_pylist():
        key = content_key(item, model_key)
        hit = cached.get(key)
        requests: list[tuple[str, dict[str, Any]]] = []
        errors: list[str] = []
        if hit is None:
            requests, errors = caption_requests(
                item, lambda uri: resolve_media_uri(data_root, uri), frames_per_segment
            )
        media = [(kind, request) for kind, request in requests if kind != "text"]
        columns["content_key"].append(key)
        columns["cached"].append(hit)
        columns["text_requests"].append([request_json(r) for kind, r in requests if kind == "text"])
        columns["media_kinds"].append([kind for kind, _ in media])
        columns["media_requests"].append([request_json(request) for _, request in media])
        columns["unreadable_media"].append(errors)
    table = batch.select(["item_id", "title", "text", "tags"])
    for name, kind in _PLAN_TYPES.items():
        table = table.append_column(name, pa.array(columns[name], kind))
    return table


_STRINGS = pa.list_(pa.string())
_PLAN_TYPES = {
    "content_key": pa.string(),
    "cached": pa.string(),
    "text_requests": _STRINGS,  # the summarizer's
    "media_kinds": _STRINGS,  # image, first, last
    "media_requests": _STRINGS,  # the captioner's (a VLM)
    "unreadable_media": _STRINGS,
}
STEPS = ("text", "media", "video")


STEP_ROLES = {"text": "summarizer", "media": "captioner", "video": "summarizer"}  # the LLM role of each step


def uncaptioned_batch(batch: pa.Table, model_key: str) -> pa.Table:
    """Items outside the scope: no captions, their card from their own title, text and tags."""
    rows = [
        {
            "item_id": item["item_id"],
            "content_key": content_key(item, model_key),
            "errors": [],
            "captioned": False,
            "from_cache": False,
            "card": item_card(item),
            "prompt_tokens": 0,
            "generated_tokens": 0,
            "llm_calls": None,
        }
        for item in batch.select(["item_id", "title", "text", "tags", "image_uris", "video_uris"]).to_pylist()
    ]
    return pa.Table.from_pylist(rows, schema=_ITEM_SCHEMA)


def video_batch(batch: pa.Table) -> pa.Table:
    """The whole-video request of each item whose opening and ending were both described."""
    requests = []
    for row in batch.to_pylist():
        described = {
            kind: answer.value["description"]
            for kind, answer in zip(row["media_kinds"], row_answers(row, "media"), strict=True)
            if kind in ("first", "last") and answer.value is not None
        }
        both = "first" in described and "last" in described
        requests.append(
            [request_json(video_request(row["title"], described["first"], described["last"]))] if both else []
        )
    return batch.append_column("video_requests", pa.array(requests, pa.list_(pa.string())))


def assemble_batch(batch: pa.Table) -> pa.Table:
    """Captions, errors and the card of each item (cached captions as they were stored)."""
    rows = []
    for row in batch.to_pylist():
        captions: dict[str, str | None] = dict.fromkeys(CAPTION_COLUMNS)
        errors = list(row["unreadable_media"])
        if row["cached"] is not None:
            captions.update(json.loads(row["cached"]))
        answered = [
            *(("text", a) for a in row_answers(row, "text")),
            *zip(row["media_kinds"], row_answers(row, "media"), strict=True),
            *(("video", a) for a in row_answers(row, "video")),
        ]
        for kind, answer in answered:
            if answer.error is not None:
                errors.append(f"{kind}: {answer.error}")
            elif kind == "text":
                captions["text_summary"] = answer.value["summary"]
            elif kind in ("image", "video"):
                captions[f"{kind}_description"] = answer.value["description"]
        rows.append(
            {
                "item_id": row["item_id"],
                "content_key": row["content_key"],
                **captions,
                "errors": errors,
                "captioned": True,
                "from_cache": row["cached"] is not None,
                "card": item_card(row, captions),
                "prompt_tokens": sum(row[f"{step}_prompt_tokens"] for step in STEPS),
                "generated_tokens": sum(row[f"{step}_generated_tokens"] for step in STEPS),
                "llm_calls": tally(row, STEPS),
            }
        )
    return pa.Table.from_pylist(rows, schema=_ITEM_SCHEMA)


_ITEM_SCHEMA = pa.schema(
    [("item_id", pa.string()), ("content_key", pa.string())]
    + [(c, pa.string()) for c in CAPTION_COLUMNS]
    + [
        ("errors", pa.list_(pa.string())),
        ("captioned", pa.bool_()),
        ("from_cache", pa.bool_()),
        ("card", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("generated_tokens", pa.int64()),
        ("llm_calls", pa.string()),  # {step: [requests, failed, retries]}
    ]
)


def caption_items(
    items_path: str, data_root: str, wanted_path: str | None, config: TailorMindConfig, out: Path, cache: Path
) -> dict[str, Any]:
    """Caption (or take from the cache) the wanted items of ``items_path``; write every item's row."""
    import ray

    cache_files = sorted(str(p) for p in cache.glob("*.parquet")) if cache.is_dir() else []
    cache_ref = ray.remote(_cached_captions).options(**LIGHT).remote(cache_files) if cache_files else None
    wanted = broadcast_table(wanted_path, ["item_id"]) if wanted_path is not None else None
    scope = {"batch_format": "pyarrow", **LIGHT}
    model_key = f"{config.llm.captioner.model_source}|{config.llm.summarizer.model_source}"
    if config.profiling.caption_scope == "none":  # no LLM: every card from the item's own text
        uncaptioned = read_items(items_path).map_batches(
            uncaptioned_batch, fn_kwargs={"model_key": model_key}, **scope
        )
        uncaptioned.write_parquet(str((out / ITEMS).resolve()))
        return _summary(out, cache, config)
    scoped = read_items(items_path).map_batches(
        in_scope_batch, fn_kwargs={"wanted": wanted, "keep": True}, **scope
    )
    planned = scoped.map_batches(
        plan_batch,
        fn_kwargs={
            "cache": cache_ref,
            "model_key": model_key,
            "data_root": data_root,
            "frames_per_segment": config.profiling.video_frames_per_segment,
        },
        **scope,
    )
    summarized = LLMStep("text", config.llm.summarizer, config.seed)(planned)
    described = LLMStep("media", config.llm.captioner, config.seed)(summarized)
    synthesised = LLMStep("video", config.llm.summarizer, config.seed)(
        described.map_batches(video_batch, **scope)
    )
    captioned = synthesised.map_batches(assemble_batch, **scope)
    rest = read_items(items_path).map_batches(
        in_scope_batch, fn_kwargs={"wanted": wanted, "keep": False}, **scope
    )
    uncaptioned = rest.map_batches(uncaptioned_batch, fn_kwargs={"model_key": model_key}, **scope)
    captioned.union(uncaptioned).write_parquet(str((out / ITEMS).resolve()))
    return _summary(out, cache, config)


def read_items(items_path: str, columns: list[str] | None = None) -> Any:
    """The catalogue at ``items_path`` (those columns) as a Dataset of ``ITEMS_PER_BLOCK``-item blocks."""
    import pyarrow.dataset
    import ray.data

    rows = pyarrow.dataset.dataset(items_path, format="parquet").count_rows()
    blocks = max(1, -(-rows // ITEMS_PER_BLOCK))
    return ray.data.read_parquet(items_path, columns=columns, override_num_blocks=blocks)


def _summary(out: Path, cache: Path, config: TailorMindConfig) -> dict[str, Any]:
    """The stage's counts, computed (and the cache extended) in a task."""
    import ray

    finish = ray.remote(_summarise_and_cache).options(**LIGHT)
    return ray.get(finish.remote(str((out / ITEMS).resolve()), str(cache.resolve()), config.llm))


def _summarise_and_cache(items: str, cache: str, llm: LLMConfig) -> dict[str, Any]:
    """Counts of the written items; their error-free new captions are appended to the cache."""
    written = pq.read_table(items, columns=["captioned", "from_cache", "errors", "content_key", "llm_calls"])
    fresh = written.filter(
        pc.and_(
            pc.and_(written["captioned"], pc.invert(written["from_cache"])),
            pc.equal(pc.list_value_length(written["errors"]), 0),
        )
    )
    _add_to_cache(Path(items), fresh["content_key"], Path(cache))
    errors = pc.greater(pc.list_value_length(written["errors"]), 0)
    return {
        "items": written.num_rows,
        "captioned": int(pc.sum(written["captioned"]).as_py() or 0),
        "from_cache": int(pc.sum(written["from_cache"]).as_py() or 0),
        "newly_cached": fresh.num_rows,
        "items_with_errors": int(pc.sum(errors).as_py() or 0),
        "llm_calls": summed_tallies(written["llm_calls"].to_pylist(), llm, STEP_ROLES),
    }


def _cached_captions(files: list[str]) -> pa.Table:
    """The cache as (content_key, captions as JSON), for ``plan_batch``'s lookups."""
    rows = (
        pa.concat_tables([pq.read_table(f).cast(_CACHE_SCHEMA) for f in files]).to_pylist() if files else []
    )
    captions = [json.dumps({c: row.get(c) for c in CAPTION_COLUMNS}) for row in rows]
    keys = [row["content_key"] for row in rows]
    return pa.table({"content_key": pa.array(keys, pa.string()), "captions": pa.array(captions, pa.string())})


def _add_to_cache(items: Path, keys: pa.ChunkedArray, cache: Path) -> None:
    """Append this run's error-free new captions to the cache as one file, written then renamed."""
    if not len(keys):
        return
    table = pq.read_table(items, columns=_CACHE_COLUMNS)
    table = table.filter(pc.is_in(table["content_key"], value_set=keys.combine_chunks()))
    cache.mkdir(parents=True, exist_ok=True)
    name = f"part-{uuid.uuid4().hex[:12]}.parquet"
    tmp = cache / f".{name}.tmp"
    pq.write_table(table.cast(_CACHE_SCHEMA), tmp)
    shutil.move(tmp, cache / name)


def captions_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``captions``: RUN/captions/items.parquet/ (captions, errors and card per item)."""
    config = pipeline.config
    data_dir = pipeline.results["data"].path
    cohort_dir = pipeline.results["cohort"].path
    cache = pipeline.runner.run_dir / "cache" / "captions"

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray, pipeline.runner.run_dir)
        wanted = str(cohort_dir / "items.parquet") if config.profiling.caption_scope == "evidence" else None
        return caption_items(str(data_dir / "items.parquet"), str(data_dir), wanted, config, out, cache)

    section = {
        "llm": [config.llm.captioner, config.llm.summarizer],
        "scope": config.profiling.caption_scope,
        "frames": config.profiling.video_frames_per_segment,
        "seed": config.seed,
    }
    return pipeline.runner.run("captions", build, config=section, inputs=[data_dir, cohort_dir])


if __name__ == "__main__":
    raise SystemExit(stage_main("captions", sys.argv[1:]))
