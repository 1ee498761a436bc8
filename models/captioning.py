"""Caption requests per item and modality (paper eq. 8), and the content keys that make captions cacheable."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from models.llm.prompts import CAPTION_FRAMES, CAPTION_IMAGE, CAPTION_TEXT, CAPTION_VIDEO
from models.media import MediaError, image_data_url, video_end_frames

CAPTION_COLUMNS = ("text_summary", "image_description", "video_description")


def content_key(item: dict[str, Any], model_source: str) -> str:
    """Hash of an item's content, the captioning model and the prompt versions: equal keys, equal captions."""
    prompts = [t.key for t in (CAPTION_TEXT, CAPTION_IMAGE, CAPTION_FRAMES, CAPTION_VIDEO)]
    fields = {k: item.get(k) for k in ("title", "text", "tags", "image_uris", "video_uris")}
    payload = json.dumps([fields, model_source, prompts], sort_keys=True, default=list)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


@dataclass
class CaptionPlan:
    """The first-pass requests of a set of items, and what the second (video synthesis) pass needs."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    videos: dict[str, str] = field(default_factory=dict)  # item_id -> title, for items with frames
    errors: dict[str, list[str]] = field(default_factory=dict)


def _request(key: str, template: Any, images: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    return {"row_key": key, "messages": template.messages(fields, images), "schema": template.schema}


def plan_captions(
    items: list[dict[str, Any]],
    resolve_uri: Callable[[str], str],
    frames_per_segment: int = 2,
    video_seconds: float = 8.0,
) -> CaptionPlan:
    """Text, image and video-frame requests for each item; unreadable media become per-item errors."""
    plan = CaptionPlan()
    for item in items:
        item_id, title = item["item_id"], item["title"]
        tags = ", ".join(item.get("tags") or [])
        plan.requests.append(
            _request(f"{item_id}|text", CAPTION_TEXT, title=title, text=item["text"], tags=tags)
        )
        for uri in (item.get("image_uris") or [])[:1]:
            try:
                image = image_data_url(resolve_uri(uri))
                plan.requests.append(_request(f"{item_id}|image", CAPTION_IMAGE, [image], title=title))
            except MediaError as exc:
                plan.errors.setdefault(item_id, []).append(str(exc))
        for uri in (item.get("video_uris") or [])[:1]:
            try:
                opening, ending = video_end_frames(resolve_uri(uri), video_seconds, frames_per_segment)
            except MediaError as exc:
                plan.errors.setdefault(item_id, []).append(str(exc))
                continue
            for segment, frames in (("first", opening), ("last", ending)):
                plan.requests.append(
                    _request(f"{item_id}|{segment}", CAPTION_FRAMES, frames, title=title, segment=segment)
                )
            plan.videos[item_id] = title
    return plan


def synthesis_requests(plan: CaptionPlan, answers: dict[str, Any]) -> list[dict[str, Any]]:
    """One request per video whose opening and ending were both described: the whole-video description."""
    requests = []
    for item_id, title in plan.videos.items():
        opening, ending = answers.get(f"{item_id}|first"), answers.get(f"{item_id}|last")
        if opening is not None and ending is not None:
            requests.append(
                _request(
                    f"{item_id}|video",
                    CAPTION_VIDEO,
                    title=title,
                    opening=opening["description"],
                    ending=ending["description"],
                )
            )
    return requests
