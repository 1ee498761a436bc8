import json

import pytest
from PIL import Image

from jobs.llm_pass import run_structured
from models.config import load_config
from models.embedding import TextEmbedder
from models.generation.images import ImageGenerator
from models.generation.pages import write_index, write_post
from models.generation.writer import GeneratedPost, PostVersion, PostWriter, UserBrief
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
    assert 'href="u_1/index.html"' in write_index(tmp_path, {"u/1": page}).read_text()


@pytest.mark.slow
def test_writer_end_to_end_with_tiny_models(ray_cluster, tiny_models):
    config = load_config(
        None,
        [
            "llm.profiler.backend=serve",
            "llm.optimizer.backend=serve",
            "llm.profiler.max_tokens=400",
            "llm.optimizer.max_tokens=400",
            "llm.profiler.max_model_len=4096",
            "llm.optimizer.max_model_len=4096",
        ],
    )
    calls = []

    def complete(requests, role):
        calls.append((role, len(requests)))
        return run_structured(requests, getattr(config.llm, role))

    writer = PostWriter(
        complete=complete,
        images=ImageGenerator("tiny://sd", steps=2, height=64, width=64),
        scorer=CLIPScorer("tiny://clip"),
        embedder=TextEmbedder(),
        num_images=2,
        reflection_rounds=1,
    )
    briefs = [
        UserBrief(
            "a", "1. space operas (watches sci-fi)", ["Star Wars | space"], ["Star Wars | space", "Alien"]
        ),
        UserBrief("b", "1. romantic comedies (rewatches them)", ["Notting Hill"], ["Notting Hill", "Amelie"]),
    ]
    posts = writer.write(briefs)
    assert [p.user_id for p in posts] == ["a", "b"]
    assert [role for role, _ in calls[:3]] == ["profiler", "profiler", "profiler"]  # styles, idea, post
    for post in posts:
        assert post.styles and post.idea and len(post.exemplars) == 2
        if post.best < 0:
            assert post.errors
            continue
        best = post.versions[post.best]
        assert len(best.images) == 2 and all(image.size == (64, 64) for image in best.images)
        assert len(best.clip) == 2 and all(0.0 <= c <= 2.5 for c in best.clip)
        assert -1.0 <= best.relevance <= 1.0
        assert 1 <= len(post.versions) <= 2
    assert any(p.best >= 0 for p in posts)
