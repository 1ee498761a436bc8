import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs.captions import caption_items
from models.captioning import CAPTION_COLUMNS, caption_requests, content_key
from models.config import load_config
from models.profiling.evidence import item_card


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


def test_a_card_keeps_the_items_own_text_and_tags_beside_its_captions():
    item = {"title": "Zoom (2015)", "text": "Genres: Animation, Comedy.", "tags": ["superheroes"]}
    caption = {"text_summary": "This article discusses technology.", "image_description": "a red cape"}
    assert item_card(item, caption) == (
        "Zoom (2015) | Genres: Animation, Comedy. (tags: superheroes) | This article discusses technology. | "
        "a red cape"
    )
    assert item_card(item) == "Zoom (2015) | Genres: Animation, Comedy. (tags: superheroes)"


def test_requests_read_media_and_report_bad_files(tmp_path, media_items):
    resolve = lambda uri: str(tmp_path / uri)  # noqa: E731
    plans = [caption_requests(item, resolve) for item in media_items]
    assert [[kind for kind, _ in requests] for requests, _ in plans] == [
        ["text", "image"],
        ["text", "first", "last"],
        ["text"],
    ]
    frames = plans[1][0][1][1]["messages"][1]["content"]
    assert sum(part["type"] == "image_url" for part in frames) == 2
    errors = plans[2][1]
    assert len(errors) == 2 and "broken.png" in errors[0]
    assert content_key(media_items[0], "m") != content_key(media_items[0], "other-model")


@pytest.mark.slow
def test_captions_each_modality_once_and_caches(ray_cluster, tiny_models, tmp_path, media_items):
    roles = ["llm.captioner.backend=serve", "llm.captioner.max_tokens=160", "llm.summarizer.backend=serve"]
    config = load_config(None, [*roles, "llm.summarizer.max_model_len=4096"])  # the session's chat engine
    items = tmp_path / "items.parquet"
    pq.write_table(pa.Table.from_pylist(media_items), items)
    wanted = tmp_path / "wanted.parquet"
    pq.write_table(pa.table({"item_id": ["a", "b", "c"]}), wanted)
    cache = tmp_path / "cache"

    def run(out, wanted_path):
        out.mkdir()
        summary = caption_items(str(items), str(tmp_path), wanted_path, config, out, cache)
        return summary, {row["item_id"]: row for row in pq.read_table(out / "items.parquet").to_pylist()}

    summary, rows = run(tmp_path / "first", str(wanted))
    assert summary["items"] == 3 and summary["from_cache"] == 0 and summary["newly_cached"] == 2
    assert rows["a"]["text_summary"] and rows["a"]["image_description"] and not rows["a"]["errors"]
    assert rows["b"]["video_description"] and not rows["b"]["errors"]
    assert rows["c"]["text_summary"] and len(rows["c"]["errors"]) == 2  # its errors keep it out of the cache
    assert rows["a"]["card"].startswith("Sunset | ") and rows["a"]["image_description"] in rows["a"]["card"]
    again, cached = run(tmp_path / "second", None)  # all in scope: a and b from the cache, c captioned again
    assert again["from_cache"] == 2 and again["newly_cached"] == 0
    for item in ("a", "b"):
        assert {k: cached[item][k] for k in CAPTION_COLUMNS} == {k: rows[item][k] for k in CAPTION_COLUMNS}
    assert cached["c"]["errors"] and not cached["c"]["from_cache"]


def test_items_without_media_start_no_captioner(ray_cluster, tiny_models, tmp_path, media_items):
    """Text-only items are summarised by the chat engine; the captioner's VLM engine is never deployed."""
    from ray import serve

    from runtime.llm import deployment_names

    captioner = ["llm.captioner.backend=serve", "llm.captioner.max_model_len=1536"]  # an engine of its own
    summarizer = ["llm.summarizer.backend=serve", "llm.summarizer.max_model_len=4096"]  # the session's chat
    config = load_config(None, [*captioner, *summarizer])
    texts = [item | {"image_uris": [], "video_uris": []} for item in media_items]
    pq.write_table(pa.Table.from_pylist(texts), items := tmp_path / "items.parquet")
    (out := tmp_path / "out").mkdir()
    summary = caption_items(str(items), str(tmp_path), None, config, out, tmp_path / "cache")
    rows = pq.read_table(out / "items.parquet").to_pylist()
    assert summary["captioned"] == 3 and all(row["text_summary"] and not row["errors"] for row in rows)
    assert summary["llm_calls"]["media"]["requests"] == 0
    assert deployment_names(config.llm.captioner)[0] not in serve.status().applications
