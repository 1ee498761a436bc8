"""Stage ``captions``: each needed item described once per modality by the captioner VLM, cached by content.

Items come from the profiled cohort (history, CF items, candidate sets) or the whole catalogue. A cache
keyed by item content, model and prompt versions (RUN/cache/captions.parquet) survives reruns, so a rerun
or a larger cohort only captions what is new.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.llm_pass import run_structured
from jobs.ray_cluster import connect
from jobs.stage_runner import StageResult
from models.captioning import CAPTION_COLUMNS, content_key, plan_captions, synthesis_requests
from models.config import TailorMindConfig
from models.data import encode_interactions, load_dataset
from models.profiling.cohort import cf_recommendations, select_cohort

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

log = logging.getLogger("tailormind.captions")
_SCHEMA = pa.schema(
    [("item_id", pa.string()), ("content_key", pa.string())]
    + [(c, pa.string()) for c in CAPTION_COLUMNS]
    + [("errors", pa.list_(pa.string()))]
)


def caption(items: list[dict[str, Any]], resolve_uri, config: TailorMindConfig, cache: Path) -> pa.Table:
    """Captions of ``items`` (one row each), reusing and extending the content-keyed cache."""
    role = config.llm.captioner
    keys = {item["item_id"]: content_key(item, role.model_source) for item in items}
    stored = pq.read_table(cache) if cache.is_file() else _SCHEMA.empty_table()
    cached = stored.filter(pc.is_in(stored["content_key"], pa.array(list(keys.values()), pa.string())))
    done = set(cached["content_key"].to_pylist())
    todo = [item for item in items if keys[item["item_id"]] not in done]
    log.info("captions: %d items, %d cached, %d to caption", len(items), len(items) - len(todo), len(todo))
    plan = plan_captions(todo, resolve_uri, config.profiling.video_frames_per_segment)
    answers = run_structured(plan.requests, role, seed=config.seed) if plan.requests else {}
    values = {k: a.value for k, a in answers.items() if a.value is not None}
    synthesis = synthesis_requests(plan, values)
    if synthesis:
        answers.update(run_structured(synthesis, role, seed=config.seed))
        values.update({k: a.value for k, a in answers.items() if a.value is not None})
    rows = []
    for item in todo:
        item_id = item["item_id"]
        errors = list(plan.errors.get(item_id, []))
        errors += [
            f"{k.split('|')[1]}: {a.error}"
            for k, a in answers.items()
            if k.startswith(f"{item_id}|") and a.error
        ]
        text = values.get(f"{item_id}|text")
        image = values.get(f"{item_id}|image")
        video = values.get(f"{item_id}|video")
        rows.append(
            {
                "item_id": item_id,
                "content_key": keys[item_id],
                "text_summary": text["summary"] if text else None,
                "image_description": image["description"] if image else None,
                "video_description": video["description"] if video else None,
                "errors": errors,
            }
        )
    fresh = pa.Table.from_pylist(rows, schema=_SCHEMA)
    complete = fresh.filter(pc.equal(pc.list_value_length(fresh["errors"]), 0))
    cache.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.concat_tables([stored, complete]), cache)  # only error-free captions are cached
    return pa.concat_tables([cached, fresh])


def captions_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``captions``: RUN/captions/captions.parquet keyed by item_id, with per-item errors."""
    config = pipeline.config
    data_dir = pipeline.results["data"].path
    cache = pipeline.runner.run_dir / "cache" / "captions.parquet"

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray)
        dataset = load_dataset(data_dir)
        items = dataset.items
        if config.profiling.caption_scope == "evidence":
            encoded = encode_interactions(dataset)
            cohort = select_cohort(
                encoded, config.profiling.max_users, config.profiling.history_items, config.seed
            )
            wanted = cohort.items()
            if "topk" in pipeline.results:
                topk = pq.ParquetDataset(pipeline.results["topk"].path).read()
                user_ids = encoded.user_ids.take(pa.array(cohort.users))
                recommended = cf_recommendations(topk, user_ids, encoded.item_ids, config.profiling.cf_items)
                wanted = np.union1d(
                    wanted, np.array([i for v in recommended.values() for i in v], dtype=np.int64)
                )
            items = items.take(pa.array(wanted))
        table = caption(items.to_pylist(), dataset.resolve_uri, config, cache)
        pq.write_table(table, out / "captions.parquet")
        failed = int(pc.sum(pc.greater(pc.list_value_length(table["errors"]), 0)).as_py() or 0)
        return {"items": table.num_rows, "items_with_errors": failed}

    section = {"llm": config.llm.captioner, "profiling": config.profiling, "seed": config.seed}
    inputs = [data_dir] + ([pipeline.results["topk"].path] if "topk" in pipeline.results else [])
    return pipeline.runner.run("captions", build, config=section, inputs=inputs)
