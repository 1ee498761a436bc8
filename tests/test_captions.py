import cv2
import numpy as np
import pytest
from PIL import Image

from jobs.captions import caption
from models.captioning import content_key, plan_captions
from models.config import load_config


def _video(path, frames=300, fps=25):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (64, 48))
    for index in range(frames):
        frame = np.full((48, 64, 3), index % 255, dtype=np.uint8)
        writer.write(frame)
    writer.release()


@pytest.fixture
def media_items(tmp_path):
    Image.new("RGB", (120, 80), "orange").save(tmp_path / "a.png")
    _video(tmp_path / "v.mp4")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    return [
        {
            "item_id": "a",
            "title": "Sunset",
            "text": "warm sky",
            "tags": ["sky"],
            "image_uris": ["a.png"],
            "video_uris": [],
        },
        {
            "item_id": "b",
            "title": "Clip",
            "text": "a video",
            "tags": [],
            "image_uris": [],
            "video_uris": ["v.mp4"],
        },
        {
            "item_id": "c",
            "title": "Broken",
            "text": "",
            "tags": [],
            "image_uris": ["broken.png"],
            "video_uris": ["missing.mp4"],
        },
    ]


def test_plan_reads_media_and_reports_bad_files(tmp_path, media_items):
    plan = plan_captions(media_items, lambda uri: str(tmp_path / uri))
    keys = [r["row_key"] for r in plan.requests]
    assert keys == ["a|text", "a|image", "b|text", "b|first", "b|last", "c|text"]
    frames = plan.requests[3]["messages"][1]["content"]
    assert sum(part["type"] == "image_url" for part in frames) == 2
    assert len(plan.errors["c"]) == 2 and "broken.png" in plan.errors["c"][0]
    assert content_key(media_items[0], "m") != content_key(media_items[0], "other-model")


@pytest.mark.slow
def test_captions_each_modality_once_and_caches(ray_cluster, tiny_models, tmp_path, media_items):
    config = load_config(None, ["llm.captioner.backend=serve", "llm.captioner.max_tokens=160"])
    cache = tmp_path / "cache.parquet"
    table = caption(media_items, lambda uri: str(tmp_path / uri), config, cache)
    rows = {r["item_id"]: r for r in table.to_pylist()}
    assert rows["a"]["text_summary"] and rows["a"]["image_description"] and not rows["a"]["errors"]
    assert rows["b"]["video_description"] and not rows["b"]["errors"]
    assert rows["c"]["text_summary"] and len(rows["c"]["errors"]) == 2
    again = caption(media_items[:2], lambda uri: str(tmp_path / uri), config, cache)  # all from the cache
    assert again.to_pylist() == [rows["a"], rows["b"]]
