"""The captions stage's rows (no Ray): each item's plan, its whole-video request, its captions and card.

An item in scope is planned (its content key, and its cached captions or its requests), answered by the
``text``, ``media`` and ``video`` LLM steps (``models.llm.rows``) and assembled into one ``ITEM_SCHEMA`` row;
an item out of scope gets its row, its card from its own text, at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from models.captioning.requests import CAPTION_COLUMNS, caption_requests, content_key, video_request
from models.data.loader import resolve_media_uri
from models.llm.rows import request_json, row_answers, tally
from models.profiling.evidence import item_card

STEPS = ("text", "media", "video")
STEP_ROLES = {"text": "summarizer", "media": "captioner", "video": "summarizer"}  # the LLM role of each step
_STRINGS = pa.list_(pa.string())
PLAN_TYPES = {
    "content_key": pa.string(),
    "cached": pa.string(),
    "text_requests": _STRINGS,  # the summarizer's
    "media_kinds": _STRINGS,  # image, first, last
    "media_requests": _STRINGS,  # the captioner's (a VLM)
    "unreadable_media": _STRINGS,
}
ITEM_SCHEMA = pa.schema(
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


def plan_items(
    batch: pa.Table, cached: Mapping[str, str], model_key: str, data_root: str, frames_per_segment: int
) -> pa.Table:
    """Each item's content key, its ``cached`` captions (JSON), or (uncached) its text and media requests."""
    columns: dict[str, list[Any]] = {name: [] for name in PLAN_TYPES}
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
    for name, kind in PLAN_TYPES.items():
        table = table.append_column(name, pa.array(columns[name], kind))
    return table


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
    return pa.Table.from_pylist(rows, schema=ITEM_SCHEMA)


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
    return pa.Table.from_pylist(rows, schema=ITEM_SCHEMA)
