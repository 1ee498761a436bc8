import json

import cv2
import numpy as np
import pytest
from PIL import Image

from models.config import load_config
from models.embedding import TextEmbedder
from models.generation.diffusion import ImageGenerator, VideoGenerator
from models.generation.pages import page_file, write_index, write_index_page, write_post
from models.generation.writer import (
    GeneratedPost,
    PostVersion,
    PostWriter,
    UserBrief,
    off_topic,
    split_groups,
)
from models.media import VideoClip
from models.scoring.clip_score import CLIPScorer


def test_post_pages_and_scores(tmp_path):
    version = PostVersion(
        "Night <city>", "body", ["city"], ["neon street"], [Image.new("RGB", (8, 8))], [1.25], 0.5
    )
    assert version.score == pytest.approx(1.0)
    worse = PostVersion("t", "b", [], ["p"], [Image.new("RGB", (8, 8))], [0.0], 0.1)
    post = GeneratedPost("u/1", ["Story Content"], "idea", [], [worse, version])
    page = write_post(tmp_path, post)
    assert post.best == 1
    assert "Night &lt;city&gt;" in page.read_text() and (page.parent / "image0.png").is_file()
    saved = json.loads((page.parent / "post.json").read_text())
    assert saved["best_version"] == 1 and saved["versions"][1]["scores"]["relevance"] == 0.5
    write_index_page(tmp_path, 0, 1, [("u/1", page.relative_to(tmp_path).as_posix())])
    assert 'href="../u_1/index.html"' in (tmp_path / page_file(0)).read_text()
    assert page_file(0) in write_index(tmp_path, 1, 1).read_text()


def test_reference_images_condition_the_images_drawn_from_them(tiny_models):
    generator = ImageGenerator("tiny://sd", steps=4, height=32, width=32)
    red, blue = Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("RGB", (30, 40), (0, 0, 255))
    plain, from_red, from_blue = (
        np.asarray(generator.generate(["a cinema at night"], [3], references)[0], dtype=float)
        for references in (None, [red], [blue])
    )
    assert from_red.shape == plain.shape == (32, 32, 3)
    assert np.abs(from_red - plain).mean() > 10  # drawn from the reference, not from noise
    assert np.abs(from_red - from_blue).mean() > 1  # and another reference gives another image
    mixed = generator.generate(["a cinema at night"] * 2, [3, 3], [None, red])  # one batch, both kinds
    assert np.abs(np.asarray(mixed[0], dtype=float) - plain).max() <= 2
    assert np.abs(np.asarray(mixed[1], dtype=float) - from_red).max() <= 2


def test_scores_of_flattened_frames_split_back_per_image_and_clip():
    parts = split_groups(np.arange(5.0), [["image"], ["f1", "f2", "f3"], ["image"]])
    assert [part.tolist() for part in parts] == [[0.0], [1.0, 2.0, 3.0], [4.0]]


def test_a_post_with_a_clip_writes_a_playable_webm(tmp_path):
    frames = [Image.new("RGB", (32, 16), (30 * i, 0, 255 - 30 * i)) for i in range(7)]
    version = PostVersion("Rain", "b", [], [], clip=[2.0], video_prompts=["rain <falls>"])
    version.videos.append(VideoClip(frames, fps=4))
    page = write_post(tmp_path, GeneratedPost("u", [], "idea", [], [version]))
    html = page.read_text()
    assert '<video src="video0.webm" title="rain &lt;falls&gt;" controls loop muted autoplay' in html
    capture = cv2.VideoCapture(str(page.parent / "video0.webm"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 7 and capture.get(cv2.CAP_PROP_FPS) == 4
    ok, first = capture.read()
    assert ok and first.shape == (16, 32, 3)
    assert abs(int(first[..., 0].mean()) - 255) < 20  # blue first frame (OpenCV reads BGR)
    saved = json.loads((page.parent / "post.json").read_text())
    assert saved["versions"][0]["video_prompts"] == ["rain <falls>"]


@pytest.mark.slow
def test_writer_end_to_end_with_tiny_models(ray_cluster, tiny_models):
    config = load_config(
        None,
        ["llm.writer.backend=serve", "llm.writer.max_tokens=400", "llm.writer.max_model_len=4096"],
    )
    from runtime.chat import RoleClients, ServeChat
    from runtime.llm import ensure_llm_deployment

    ensure_llm_deployment(config.llm.writer)
    clients = RoleClients({"writer": ServeChat.for_role(config.llm.writer)})
    calls = []

    def complete(requests, role):
        calls.append((role, len(requests)))
        return clients(requests, role)

    scorer = CLIPScorer("tiny://clip")
    writer = PostWriter(
        complete=complete,
        images=ImageGenerator("tiny://sd", steps=2, height=64, width=64),
        scorer=scorer,
        embedder=TextEmbedder(),
        num_images=2,
        reflection_rounds=1,
        videos=VideoGenerator("tiny://video", frames=9, steps=2, height=32, width=32),
        num_videos=1,
        video_score_frames=3,
    )
    briefs = [
        UserBrief(
            "a", "1. space operas (watches sci-fi)", ["Star Wars | space"], ["Star Wars | space", "Alien"]
        ),
        UserBrief("b", "1. romantic comedies (rewatches them)", ["Notting Hill"], ["Notting Hill", "Amelie"]),
    ]
    posts = writer.write(briefs)
    assert [p.user_id for p in posts] == ["a", "b"]
    assert [role for role, _ in calls[:3]] == ["writer", "writer", "writer"]  # styles, idea, post
    assert clients.calls["writer"][0] == sum(count for _, count in calls)  # every request counted
    for post in posts:
        assert post.styles and post.idea and len(post.exemplars) == 2
        if post.best < 0:
            assert post.errors
            continue
        best = post.versions[post.best]
        assert len(best.images) == 2 and all(image.size == (64, 64) for image in best.images)
        assert len(best.video_prompts) == 1 and len(best.videos[0].frames) == 9
        assert len(best.clip) == 3 and all(0.0 <= c <= 2.5 for c in best.clip)  # 2 images, then the clip
        frames = best.videos[0].sample(3)
        text = f"{best.title}. {best.video_prompts[0]}"
        assert best.clip[2] == pytest.approx(float(np.mean(scorer.score(frames, [text] * 3))), abs=1e-5)
        assert -1.0 <= best.relevance <= 1.0
        assert 1 <= len(post.versions) <= 2
    assert any(p.best >= 0 for p in posts)


def test_a_post_no_closer_to_its_readers_history_than_to_the_other_readers_is_off_topic():
    similarity = np.array([[0.9, 0.1, 0.2], [0.3, 0.2, 0.5], [0.4, 0.4, 0.4]])  # posts x readers
    own = similarity[np.arange(3), [0, 1, 2]]
    assert off_topic(similarity, own).tolist() == [False, True, True]
    assert off_topic(similarity[:1, :1], own[:1]).tolist() == [False]  # one reader: nothing to compare
