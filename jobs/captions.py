"""Stage ``captions``: each needed item described once per modality by the captioner VLM; every item's card.

One Ray Data pipeline over the catalogue: items in scope (the cohort's, all, or none) that the content-keyed
cache does not hold get their text, image and video-segment requests, a second step turns the two video
segments into one description, and every item leaves with its card (title + captions, or its own text).
``RUN/captions/items.parquet/`` holds one row per catalogue item; error-free new captions are added to the
cache (``RUN/cache/captions/``, one Parquet file per run), so a rerun or a larger cohort only captions what
is new. The rows are shaped in ``models.captioning.rows``; the cache is read and extended by
``models.captioning.cache``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from jobs.llm_step import LIGHT, LLMStep
from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult
from models.captioning.cache import cache_files, cached_captions, summarise_and_cache
from models.captioning.rows import assemble_batch, plan_items, uncaptioned_batch, video_batch
from models.config import TailorMindConfig
from runtime.artifacts import CAPTIONED_ITEMS, read_catalogue
from runtime.broadcast import broadcast_table, mapping_of, table_of
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun


def in_scope_batch(batch: pa.Table, wanted: Any, keep: bool) -> pa.Table:
    """The items of ``batch`` that are (``keep``) or are not in the captioning scope (None: every item)."""
    if wanted is None:
        return batch if keep else batch.slice(0, 0)
    scoped = pc.is_in(batch["item_id"], value_set=table_of(wanted)["item_id"])
    return batch.filter(scoped if keep else pc.invert(scoped))


MEDIA_COLUMNS = ("image_uris", "video_uris")


def media_batch(batch: pa.Table) -> pa.Table:
    """How many items of ``batch`` have images or videos (one row, column ``items``)."""
    lengths = [pc.fill_null(pc.list_value_length(batch[name]), 0) for name in MEDIA_COLUMNS]
    with_media = pc.greater(pc.add(*lengths), 0)
    return pa.table({"items": [pc.sum(with_media.cast(pa.int64())).as_py() or 0]})


def plan_batch(
    batch: pa.Table, cache: Any, model_key: str, data_root: str, frames_per_segment: int
) -> pa.Table:
    """Each item's content key, its cached captions, or (not cached) its text and media requests."""
    cached = mapping_of(cache, "content_key", "captions") if cache is not None else {}
    return plan_items(batch, cached, model_key, data_root, frames_per_segment)


def caption_items(
    items_path: str, data_root: str, wanted_path: str | None, config: TailorMindConfig, out: Path, cache: Path
) -> dict[str, Any]:
    """Caption (or take from the cache) the wanted items of ``items_path``; write every item's row."""
    import ray

    from runtime.llm import ensure_llm_deployments

    files = cache_files(cache)
    cache_ref = ray.remote(cached_captions).options(**LIGHT).remote(files) if files else None
    wanted = broadcast_table(wanted_path, ["item_id"]) if wanted_path is not None else None
    scope = {"batch_format": "pyarrow", **LIGHT}
    model_key = f"{config.llm.captioner.model_source}|{config.llm.summarizer.model_source}"
    if config.profiling.caption_scope == "none":  # no LLM: every card from the item's own text
        uncaptioned = read_catalogue(items_path).map_batches(
            uncaptioned_batch, fn_kwargs={"model_key": model_key}, **scope
        )
        uncaptioned.write_parquet(str((out / CAPTIONED_ITEMS).resolve()))
        return _summary(out, cache, config)
    scoped = read_catalogue(items_path).map_batches(
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
    media = read_catalogue(items_path, ["item_id", *MEDIA_COLUMNS]).map_batches(
        in_scope_batch, fn_kwargs={"wanted": wanted, "keep": True}, **scope
    )  # the media columns alone: whether the VLM has work, without reading the catalogue's texts again
    has_media = bool(media.map_batches(media_batch, **scope).sum("items"))
    roles = [config.llm.summarizer, *([config.llm.captioner] if has_media else [])]
    ensure_llm_deployments([role for role in roles if role.backend == "serve"])  # the two starts overlap
    summarized = LLMStep("text", config.llm.summarizer, config.seed)(planned)
    described = LLMStep("media", config.llm.captioner, config.seed, asks=has_media)(summarized)
    synthesised = LLMStep("video", config.llm.summarizer, config.seed)(
        described.map_batches(video_batch, **scope)
    )
    captioned = synthesised.map_batches(assemble_batch, **scope)
    rest = read_catalogue(items_path).map_batches(
        in_scope_batch, fn_kwargs={"wanted": wanted, "keep": False}, **scope
    )
    uncaptioned = rest.map_batches(uncaptioned_batch, fn_kwargs={"model_key": model_key}, **scope)
    captioned.union(uncaptioned).write_parquet(str((out / CAPTIONED_ITEMS).resolve()))
    return _summary(out, cache, config)


def _summary(out: Path, cache: Path, config: TailorMindConfig) -> dict[str, Any]:
    """The stage's counts, computed (and the cache extended) in a task."""
    import ray

    finish = ray.remote(summarise_and_cache).options(**LIGHT)
    return ray.get(finish.remote(str((out / CAPTIONED_ITEMS).resolve()), str(cache.resolve()), config.llm))


def captions_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``captions``: RUN/captions/items.parquet/ (captions, errors and card per item)."""
    config = pipeline.config
    data_dir = pipeline.results["data"].path
    cohort_dir = pipeline.results["cohort"].path
    cache = pipeline.runner.run_dir / "cache" / "captions"

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray, pipeline.runner.run_dir)
        scoped = config.profiling.caption_scope in ("evidence", "history")
        wanted = str(cohort_dir / "items.parquet") if scoped else None
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
