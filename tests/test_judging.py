"""TailorBench content metrics on hand-made cases whose right answers are known."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from models.evaluation import mean_with_ci
from models.judging.ablations import method_briefs
from models.judging.coherence import coherence, visual_coherence
from models.judging.judge import CatalogueFacts, PostView, judge_requests, judged_scores
from models.llm.structured import LLMAnswer
from models.media import VideoClip

CATALOGUE = [
    "Toy Story (1995) | an animated film about toys that come alive; Woody and Buzz Lightyear",
    "Heat (1995) | a crime thriller; Al Pacino hunts Robert De Niro's heist crew in Los Angeles",
    "Amelie (2001) | a whimsical French romance in Montmartre",
    "Alien (1979) | science-fiction horror aboard the spaceship Nostromo",
]


def test_coherence_is_clipscore_against_the_mean_reference():
    reference = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    mean_direction = np.array([[1.0, 1.0, 0.0]])
    assert coherence(mean_direction, reference) == pytest.approx(2.5)  # identical to the reference
    assert coherence(np.array([[0.0, 0.0, 1.0]]), reference) == 0.0  # orthogonal
    assert coherence(-mean_direction, reference) == 0.0  # opposite: clipped at zero
    both = np.vstack([mean_direction, [[0.0, 0.0, 1.0]]])
    assert coherence(both, reference) == pytest.approx(1.25)  # mean over a post's images


def test_a_clip_counts_once_with_the_mean_of_its_frames():
    reference = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    image = np.array([[1.0, 1.0, 0.0]])  # 2.5
    clip = np.array(
        [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]
    )  # frames 2.5, 0, 0, 0
    assert visual_coherence([clip], reference) == pytest.approx(0.625)
    assert visual_coherence([image, clip], reference) == pytest.approx((2.5 + 0.625) / 2)  # not 5/5 frames


def test_the_judge_sees_a_clip_as_its_first_and_last_frames():
    frames = [Image.new("RGB", (8, 8), (i, i, i)) for i in range(9)]
    view = PostView(
        "full", "u1", "A post", [Image.new("RGB", (8, 8))], ["Heat"], "Heat", [VideoClip(frames, 8)]
    )
    assert [len(group) for group in view.visuals(4)] == [1, 4]
    (quality, _) = judge_requests([view], [["fact"]], max_images=4)
    content = quality["messages"][1]["content"]
    assert [part["type"] for part in content] == ["image_url"] * 3 + ["text"]
    assert "its 1 image(s) and 2 video frame(s) are attached above" in content[-1]["text"]
    (quality, _) = judge_requests([view], [["fact"]], max_images=2)
    assert "its 1 image(s) and 1 video frame(s) are attached" in quality["messages"][1]["content"][-1]["text"]


def test_mean_with_ci_ignores_failed_judgements():
    summary = mean_with_ci([0.5, math.nan, 0.5])
    assert summary == {"mean": 0.5, "ci95": [0.5, 0.5], "n": 2}
    assert mean_with_ci([math.nan])["mean"] is None
    low, high = mean_with_ci([0.0, 1.0, 0.0, 1.0], seed=1)["ci95"]
    assert 0.0 <= low < 0.5 < high <= 1.0


def test_metrics_on_which_every_method_scored_alike_are_named_and_reported():
    """The demo's judge gave three methods' posts the same novelty, aesthetic and hallucination for its user:
    named as indistinct (the ground truth does not count), and the report says they compare nothing."""
    from models.judging.scores import indistinct_metrics
    from models.report.render import judge_note

    def row(method, user, novelty, coherence):
        hallucination = math.nan if method == "full" else 1.0  # full's failed: nothing to compare with
        scores = {"novelty": novelty, "aesthetic": 0.5, "coherence": coherence}
        return {"method": method, "user_id": user, "hallucination": hallucination, **scores}

    rows = [row("ground_truth", "u", 1.0, 2.3), row("full", "u", 0.0, 0.1), row("no_profile", "u", 0.0, 0.2)]
    rows += [row("ground_truth", "v", 0.0, 2.0), row("full", "v", 0.5, 0.3), row("no_profile", "v", 0.5, 0.3)]
    assert indistinct_metrics(rows) == ["novelty", "aesthetic"]  # coherence differs for u
    assert indistinct_metrics([r for r in rows if r["method"] != "no_profile"]) == []  # one method: no claim
    note = judge_note({"num_users": 2, "indistinct": ["novelty", "aesthetic"]})
    assert "same novelty, aesthetic from every method" in note


def test_judge_requests_are_blind_and_carry_images_only_for_quality():
    views = [
        PostView("full", "u1", "A post about heists", [Image.new("RGB", (8, 8))], ["Heat"], "Heat"),
        PostView("no_rag", "u1", "Another post", [], ["Heat"], "Heat"),
    ]
    requests = judge_requests(views, [["fact a"], ["fact b"]], max_images=1)
    text = json.dumps([r["messages"] for r in requests])
    assert "full" not in text and "no_rag" not in text and "u1" not in text
    assert [r["row_key"].split("|")[1] for r in requests] == ["quality", "facts"] * 2
    quality = requests[0]["messages"][1]["content"]
    assert quality[0]["type"] == "image_url" and "attached" in quality[-1]["text"]
    assert isinstance(requests[2]["messages"][1]["content"], str)  # no image, plain text
    assert "fact a" in requests[1]["messages"][1]["content"]


def test_a_post_that_contradicts_the_catalogue_gets_the_contradicted_facts_and_counts():
    from models.embedding import TextEmbedder

    facts = CatalogueFacts(CATALOGUE, TextEmbedder(), top_k=2)
    post = "Heat (1995) is an animated film about Woody, a toy cowboy, and his pals."
    (retrieved,) = facts.facts([post])
    assert set(retrieved) == {CATALOGUE[0], CATALOGUE[1]}  # the facts that refute it
    view = PostView("full", "u1", post)
    answers = {
        f"{view.key}|facts": LLMAnswer("k", {"hallucination": 1, "unsupported_claim": "animated"}, None, 1),
        f"{view.key}|quality": LLMAnswer(
            "k", {"novelty": 5, "text_aesthetic": 3, "visual_aesthetic": 1}, None, 1
        ),
    }
    assert judged_scores(view, answers, visual_rated=False) == {
        "novelty": 1.0,
        "aesthetic": 0.5,
        "hallucination": 1.0,
    }
    assert judged_scores(view, answers, visual_rated=True)["aesthetic"] == 0.25
    failed = {f"{view.key}|facts": LLMAnswer("k", None, "invalid JSON", 2)}
    assert all(math.isnan(v) for v in judged_scores(view, failed, visual_rated=True).values())


def test_catalogue_vectors_embed_each_card_once_across_runs(ray_cluster, tmp_path):
    from jobs.card_vectors import catalogue_vectors
    from models.embedding import TextEmbedder
    from models.vectors import embedding_matrix

    cache, embedder = tmp_path / "cache", TextEmbedder()

    def vectors(cards: list[str]) -> tuple[list[str], np.ndarray]:
        items = tmp_path / f"items-{len(cards)}.parquet"
        ids = [f"i{n}" for n in range(len(cards))]
        pq.write_table(pa.table({"item_id": ids, "card": cards, "title": ["t"] * len(cards)}), items)
        table = ray_cluster.get(catalogue_vectors(str(items), cache, "cpu", 1))
        assert table["item_id"].to_pylist() == ids and table["card"].to_pylist() == cards
        return sorted(p.name for p in cache.iterdir()), embedding_matrix(table["vector"])

    before, first = vectors(CATALOGUE)
    assert len(before) == 1 and np.allclose(first, embedder.embed(CATALOGUE), atol=1e-4)
    grown = [*CATALOGUE, "Up (2009) | an old man flies his house to South America", CATALOGUE[0]]
    runs, second = vectors(grown)  # only the new card is embedded, once; the repeated card reuses its vector
    (added,) = set(runs) - set(before)
    assert pq.read_table(cache / added).num_rows == 1
    assert np.allclose(second, embedder.embed(grown), atol=1e-4)
    assert vectors(grown)[0] == runs  # nothing new: no folder added
    facts = CatalogueFacts(grown, embedder, top_k=1, vectors=second)
    assert facts.facts(["a house lifted by balloons"]) == [[grown[4]]]


def test_ablation_briefs_change_one_thing_each():
    profiles = {"initial": "v0", "refined": "v3"}

    def brief(method):
        return method_briefs(method, "u", profiles, ["h"], ["h", "cf"], "generic")

    full = brief("full")
    assert (full.profile, full.use_exemplars, full.reflection_rounds) == ("v3", True, None)
    assert brief("no_profile").profile == "generic"
    assert brief("no_refinement").profile == "v0"
    assert brief("no_rag").use_exemplars is False and brief("no_rag").profile == "v3"
    assert brief("no_reflection").reflection_rounds == 0
    assert len({brief(m).user_id for m in ("full", "no_rag", "no_profile")}) == 3


def test_cards_of_items_keeps_only_the_listed_items(tmp_path):
    from runtime.artifacts import write_cards_of

    cards = {"item_id": ["a", "b", "c"], "card": ["A card", "B card", "C card"], "captioned": [True] * 3}
    pq.write_table(pa.table(cards), tmp_path / "cards.parquet")
    items = {"item_id": ["c", "a", "z"], "title": ["C", "A", "Z"]}
    pq.write_table(pa.table(items), tmp_path / "items.parquet")
    paths = [str(tmp_path / name) for name in ("cards.parquet", "items.parquet", "pool.parquet")]
    kept = pq.read_table(write_cards_of(*paths)).to_pylist()
    assert kept == [{"item_id": "a", "card": "A card"}, {"item_id": "c", "card": "C card"}]
