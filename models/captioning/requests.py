"""Caption requests per item and modality (paper eq. 8), and the content keys that make captions cacheable."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
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


def _request(template: Any, images: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    return {"messages": template.messages(fields, images), "schema": template.schema}


def caption_requests(
    item: dict[str, Any],
    resolve_uri: Callable[[str], str],
    frames_per_segment: int = 2,
    video_seconds: float = 8.0,
) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """An item's first-pass requests as (kind, request): text, image, the video's first and last seconds.

    Unreadable media become errors (the second value) instead of requests.
    """
    title = item["title"]
    tags = ", ".join(item.get("tags") or [])
    requests = [("text", _request(CAPTION_TEXT, title=title, text=item.get("text") or "", tags=tags))]
    errors = []
    for uri in (item.get("image_uris") or [])[:1]:
        try:
            requests.append(
                ("image", _request(CAPTION_IMAGE, [image_data_url(resolve_uri(uri))], title=title))
            )
        except MediaError as exc:
            errors.append(str(exc))
    for uri in (item.get("video_uris") or [])[:1]:
        try:
            opening, ending = video_end_frames(resolve_uri(uri), video_seconds, frames_per_segment)
        except MediaError as exc:
            errors.append(str(exc))
            continue
        for segment, frames in (("first", opening), ("last", ending)):
            requests.append((segment, _request(CAPTION_FRAMES, frames, title=title, segment=segment)))
    return requests, errors


def video_request(title: str, opening: str, ending: str) -> dict[str, Any]:
    """The second-pass request: the whole video from the descriptions of its opening and ending."""
    return _request(CAPTION_VIDEO, title=title, opening=opening, ending=ending)
