"""Cold start: taste clusters of the catalogue, clarifying questions, answers and the curated default."""

import numpy as np
import pyarrow as pa
import pytest

from models.config import ColdStartConfig, load_config
from models.data import encode_interactions, load_dataset
from models.errors import TailorMindError
from models.profiling.catalogue import (
    AnswerError,
    Catalogue,
    TasteCluster,
    by_popularity,
    cluster_embeddings,
    cluster_table,
    distinctive_tags,
    fallback_label,
    label_request,
)
from models.profiling.cohort import UserSample, select_cohort, select_cold_start
from tests.datasets import write_interactions, write_items

EVERY_USER = UserSample(None, 0, "profiling")


def planted(clusters: int = 12, per_cluster: int = 6, dim: int = 16, seed: int = 0) -> np.ndarray:
    """Item embeddings around ``clusters`` random directions (rows grouped by cluster), with varied norms."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    rows = np.repeat(centres, per_cluster, axis=0) + 0.05 * rng.normal(size=(clusters * per_cluster, dim))
    return rows * rng.uniform(0.5, 3.0, size=(len(rows), 1))  # cosine clustering ignores the norms


def test_spherical_kmeans_recovers_planted_tastes():
    labels = cluster_embeddings(planted(), k=12, seed=3)
    groups = labels.reshape(12, 6)
    assert (groups == groups[:, :1]).all()  # every planted group in one cluster
    assert len(set(groups[:, 0].tolist())) == 12  # and every group its own
    assert (cluster_embeddings(planted(), k=12, seed=3) == labels).all()  # seeded
    with pytest.raises(ValueError, match="cannot form 12 clusters"):
        cluster_embeddings(planted()[:5], k=12, seed=0)


def test_cluster_table_keeps_the_most_popular_clusters_and_items_first():
    ids = pa.array([f"i{n}" for n in range(8)])
    cards = pa.array([f"card {n}" for n in range(8)])
    popularity = np.array([1, 9, 3, 2, 50, 1, 7, 4])
    clusters = by_popularity(np.array([5, 5, 5, 1, 1, 9, 9, 9]), popularity)
    assert clusters.tolist() == [1, 1, 1, 0, 0, 2, 2, 2]
    table = cluster_table(ids, cards, popularity, clusters, top=2)
    assert table["popularity"].to_pylist() == [52, 13, 12]  # cluster 1, then 0, then 2
    assert table["size"].to_pylist() == [2, 3, 3]
    assert table["items"].to_pylist() == [["i4", "i3"], ["i1", "i2"], ["i6", "i7"]]
    assert table["cards"].to_pylist()[0] == ["card 4", "card 3"]
    request = label_request("0", table["cards"].to_pylist()[0], ["heist", "noir"])
    asked = request["messages"][1]["content"]
    assert "card 4" in asked and "heist, noir" in asked and request["schema"]["required"] == ["label"]
    assert request["schema"]["properties"]["label"]["enum"] == [
        "Heist",
        "Noir",
        "Heist & Noir",
        "Noir & Heist",
    ]
    assert "enum" not in label_request("1", ["card"], [])["schema"]["properties"]["label"]
    tags = [["drama", "heist"], ["drama", "heist"], ["drama"], ["drama", "cartoon"], ["cartoon"], ["drama"]]
    typical = distinctive_tags(tags, np.array([0, 0, 0, 1, 1, 2]), top=2)
    assert typical == [["heist", "drama"], ["cartoon", "drama"], ["drama"]]  # drama is everywhere: last
    assert fallback_label(["Heat (1995) | a heist thriller"]) == "Like Heat (1995)"


def _catalogue(**settings: int) -> Catalogue:
    clusters = [
        TasteCluster(f"taste {n}", popularity=100 - n, items=[f"i{n}a", f"i{n}b"], cards=[f"c{n}a", f"c{n}b"])
        for n in range(12)
    ]
    return Catalogue(clusters, ColdStartConfig(**settings))


def test_questions_answers_and_the_curated_default():
    catalogue = _catalogue()
    questions = catalogue.questions()
    assert [q["id"] for q in questions] == ["q1", "q2", "q3", "q4"]
    assert questions[0]["choices"] == ["taste 0", "taste 4", "taste 8"]  # popular and niche tastes mixed
    offered = [choice for q in questions for choice in q["choices"]]
    assert sorted(offered) == sorted(f"taste {n}" for n in range(12))  # each cluster offered once
    answers = [("q1", "taste 8"), ("q3", "taste 2")]
    assert catalogue.evidence(0, answers) == ["c8a", "c8b", "c2a", "c2b"]
    assert catalogue.evidence(5, answers) == ["c8a", "c8b", "c2a", "c2b"]  # answers are never dropped
    default = ["c0a", "c0b", "c1a", "c1b", "c2a", "c2b"]  # 2 items kept of the 3 most popular clusters
    assert catalogue.evidence(0) == default and catalogue.evidence(2) == default
    assert catalogue.evidence(3) == []  # a history of min_history items needs no default
    assert _catalogue(default_clusters=1, default_items_per_cluster=1).default() == ["c0a"]
    for bad, reason in (
        ([("q9", "taste 0")], "no question 'q9'"),
        ([("q1", "taste 1")], "'taste 1' is not a choice of question 'q1'"),
        ([("q1", "taste 0"), ("q1", "taste 4")], "answered twice"),
    ):
        with pytest.raises(AnswerError, match=reason):
            catalogue.evidence(0, bad)


def test_labels_are_made_unique_and_the_config_needs_a_cluster_per_choice():
    table = pa.table(
        {
            "label": ["Drama"] * 2 + [f"t{n}" for n in range(10)],
            "popularity": list(range(12, 0, -1)),
            "items": [["i"]] * 12,
            "cards": [["c"]] * 12,
        }
    )
    assert Catalogue.from_table(table, ColdStartConfig()).questions()[1]["choices"][0] == "Drama (2)"
    with pytest.raises(TailorMindError, match=r"coldstart.clusters \(6\) must be at least"):
        load_config(None, ["coldstart.clusters=6"])
    with pytest.raises(ValueError, match="the catalogue has 12 clusters; 5 questions of 3 choices need 15"):
        _catalogue(num_questions=5, clusters=15)


def test_users_with_few_interactions_are_the_cold_start_sample(tmp_path):
    write_items(tmp_path, [f"i{j}" for j in range(30)])
    rows = [(f"u{u}", f"i{(u * 3 + k) % 30}", 10 * k + u) for u in range(6) for k in range(6)]
    rows += [("new1", "i1", 5), ("new2", "i2", 5), ("new2", "i3", 9), ("new3", "i4", 1)]
    write_interactions(tmp_path, rows)
    encoded = encode_interactions(load_dataset(tmp_path))
    cohort = select_cohort(encoded, EVERY_USER, history_items=5, num_negatives=9)
    cold, items = select_cold_start(encoded, cohort.users, min_history=3, sample=EVERY_USER)
    names = encoded.user_ids.take(pa.array(cold)).to_pylist()
    assert names == ["new1", "new2", "new3"] and len(cohort.users) == 6
    as_ids = [encoded.item_ids.take(pa.array(i)).to_pylist() for i in items]
    assert as_ids == [["i1"], ["i3", "i2"], ["i4"]]  # most recent first
    sampled, _ = select_cold_start(
        encoded, cohort.users, min_history=3, sample=UserSample(2, 0, "cold-start")
    )
    assert len(sampled) == 2 and set(sampled) <= set(cold)
    everyone, _ = select_cold_start(encoded, np.array([], dtype=np.int64), 7, EVERY_USER)
    assert len(everyone) == 9  # with min_history 7, the 6-item users are cold-start too


def test_taste_spread_is_low_for_a_narrow_profile_and_high_for_a_varied_history():
    from models.embedding import CardVectors, TextEmbedder
    from models.profiling.drift import TasteSpread, normalized_entropy

    assert normalized_entropy([2, 2, 2], k=4) == 0.0 and normalized_entropy([0, 1, 2, 3], k=4) == 1.0
    assert np.isnan(normalized_entropy([], k=4))
    tastes = {
        0: ["a bank heist thriller", "robbers plan a casino heist", "a crime thriller about a safecracker"],
        1: ["an animated film about talking toys", "a cartoon family comedy", "animated fairy tale musical"],
        2: ["a haunted house horror film", "a slasher horror movie", "zombies attack in a horror film"],
    }
    cards = {f"{c}-{n}": text for c, texts in tastes.items() for n, text in enumerate(texts)}
    cluster_of = {item: int(item.split("-")[0]) for item in cards}
    spread = TasteSpread(CardVectors(TextEmbedder(), cards), cluster_of, list(cards), nearest=3)
    assert spread.of_items(["0-0", "1-0", "2-0", "not-clustered"]) == pytest.approx(1.0)  # three alike
    narrow, varied, empty = spread.of_texts(
        ["1. heist thrillers (bank robbers and safecrackers)", "horror, cartoons and crime", ""]
    )
    assert narrow == 0.0 and varied > narrow and np.isnan(empty)
