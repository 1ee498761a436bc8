"""Refinement never shows the LLM a user's test item; its trace keeps every round's profile and rank."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pytest

from models.config import load_config
from models.data import encode_interactions, load_dataset
from models.llm.scoring import ScoredContinuation
from models.llm.structured import LLMAnswer
from models.profiling.cohort import UserSample, cohort_table, select_cohort
from models.profiling.grounding import Vocabulary
from models.profiling.refiner import ProfileRefiner
from runtime.broadcast import mapping_of
from runtime.refining import start_batch
from tests.datasets import clean_dataset

EVERY_USER = UserSample(None, 0, "profiling")


def recording_llm(sent: list[tuple[str, str, str]]):
    """Stands in for the engine: records (user, role, prompt), ranks the positive last, always updates."""

    def complete(requests, role):
        answers = {}
        for request in requests:
            user = request["row_key"].split("#")[0]
            sent.append((user, role, json.dumps(request["messages"])))
            properties = request["schema"]["properties"]
            if "top" in properties:
                value = {"top": list(range(properties["top"]["minItems"]))}
            elif "why" in properties:
                value = {"missing": "none", "overstated": "none", "why": "be more specific"}
            else:
                value = {"preferences": [{"preference": f"p{len(sent)}", "reason": "r"}]}
            answers[request["row_key"]] = LLMAnswer(request["row_key"], value, None, 1)
        return answers

    return complete


def recording_scorer(sent: list[tuple[str, str, str]]):
    """Stands in for the likelihood ranker's engine: records (user, "ranker", prefix + card), scores by
    the card's length (longer ids first: no signal, and ties count against the positives)."""

    def score(requests):
        scored = {}
        for request in requests:
            sent.append(
                (request["row_key"].split("#")[0], "ranker", request["prefix"] + request["continuation"])
            )
            value = float(len(request["continuation"]))
            scored[request["row_key"]] = ScoredContinuation(request["row_key"], value, 1, 1, 1)
        return scored

    return score


@pytest.mark.parametrize(
    ("mode", "permutations", "negatives"),
    [
        ("listwise", 1, "fixed"),
        ("listwise", 2, "fixed"),
        ("listwise", 1, "resample"),
        ("likelihood", 1, "fixed"),
        ("likelihood", 1, "resample"),
    ],
)
def test_refinement_prompts_never_contain_test_items(tmp_path, mode, permutations, negatives):
    dataset = load_dataset(clean_dataset(tmp_path, users=6, items=400, per_user=9))
    encoded = encode_interactions(dataset)
    cohort_rows = select_cohort(encoded, EVERY_USER, history_items=5, valid_positives=3)
    table = cohort_table(encoded, cohort_rows, None, 0)
    cohort = table.to_pylist()
    item_ids = encoded.item_ids.to_pylist()
    cards = pa.table({"item_id": item_ids, "card": [f"CARD-{item_id}" for item_id in item_ids]})
    overrides = [
        "profiling.rounds=2",
        "profiling.rank_top_k=3",
        f"profiling.rank_mode={mode}",
        f"profiling.rank_permutations={permutations}",
    ]
    config = load_config(None, [*overrides, f"profiling.valid_negatives={negatives}"])
    priors = dict.fromkeys(item_ids, -1.0)
    lookup = mapping_of(cards, "item_id", "card")
    refiner = ProfileRefiner(config.profiling, lookup, 0, catalogue=item_ids, priors=priors)
    initial = json.dumps([{"preference": "films", "reason": "watched many"}])
    profiles = table.append_column("preferences", pa.array([initial] * table.num_rows))
    rows = start_batch(profiles, cards, config).to_pylist()  # round-0 states, without feedback
    sent: list[tuple[str, str, str]] = []
    seen = {u["user_id"]: u["seen_items"] for u in cohort}
    refiner.refine(rows, recording_llm(sent), seen=seen, score=recording_scorer(sent))

    for user in cohort:
        positives = user["valid_candidates"][: user["valid_positives"]]
        assert user["valid_positives"] == 3  # 9 interactions: 7 in train, so 2 of them validate too
        assert not set(positives) & set(user["history"]) and not set(positives) & set(user["cf_items"])
        prompts = " ".join(prompt for who, _, prompt in sent if who == user["user_id"])
        shown = set(re.findall(r"CARD-[^\s\"\\]+", prompts))
        assert {f"CARD-{item}" for item in positives} <= shown  # every validation positive is ranked
        assert f"CARD-{user['test_candidates'][0]}" not in shown  # the test positive never is
        others = set(user["seen_items"]) - set(positives)
        assert not {f"CARD-{item}" for item in others} & shown  # nor any other item the user interacted with
    rankings = [prompt for _, role, prompt in sent if role == "ranker"]
    per_round = 102 if mode == "likelihood" else permutations  # a scoring per candidate, or a listing
    assert len(rankings) == 3 * len(cohort) * per_round  # rounds 0, 1, 2
    for row in rows:
        assert len(row["round_profiles"]) == len(row["valid_ranks"]) == 3  # rounds 0, 1, 2
        assert row["round_profiles"][0] == "1. films (watched many)"
        assert row["round_profiles"][1] != row["round_profiles"][0]  # the update was adopted
        assert row["best_round"] >= 0 and not row["active"]
        assert len(row["round_gradients"]) == 2  # one per update


def test_validation_negatives_are_redrawn_each_round_when_asked(tmp_path):
    dataset = load_dataset(clean_dataset(tmp_path, users=3, items=400, per_user=8))
    encoded = encode_interactions(dataset)
    user = cohort_table(encoded, select_cohort(encoded, EVERY_USER, history_items=5), None, 0).to_pylist()[0]
    cards = {item_id: item_id for item_id in encoded.item_ids.to_pylist()}
    for negatives, expect_same in (("fixed", True), ("resample", False)):
        config = load_config(None, [f"profiling.valid_negatives={negatives}"])
        refiner = ProfileRefiner(config.profiling, cards, seed=0, catalogue=list(cards))
        row = refiner.start(user["user_id"], [], user["valid_candidates"])
        rounds = [refiner.candidates(row, user["seen_items"], r) for r in range(3)]
        assert all(r[0] == user["valid_candidates"][0] and len(r) == 100 for r in rounds)
        assert (rounds[1] == rounds[0]) is expect_same and (rounds[2] == rounds[1]) is expect_same
        assert not set(rounds[2][1:]) & set(user["seen_items"])  # negatives are never-seen items


def test_tokens_per_round_sum_the_users_in_each_round_and_leave_an_unreported_cache_unknown():
    from models.profiling.refinement_summary import tokens_per_round

    table = pa.table(
        {
            "prompt_tokens": [[100, 80], [200], []],
            "generated_tokens": [[10, 8], [20], []],
            "cached_tokens": pa.array([[50, 80], [150], []], pa.list_(pa.int64())),
        }
    )
    first, second = tokens_per_round(table)
    assert first == {
        "round": 0,
        "users": 2,
        "prompt_tokens": 300,
        "generated_tokens": 30,
        "cached_tokens": 200,
        "prefix_cache_hit_rate": 200 / 300,
    }
    assert (second["users"], second["prompt_tokens"], second["prefix_cache_hit_rate"]) == (1, 80, 1.0)
    unreported = table.set_column(2, "cached_tokens", pa.array([[None, 80], [150], []], pa.list_(pa.int64())))
    assert tokens_per_round(unreported)[0]["prefix_cache_hit_rate"] is None


def test_summarise_reads_each_users_first_and_best_rank_across_files(tmp_path):
    import pyarrow.parquet as pq

    from models.config import TailorMindConfig
    from models.profiling.refinement_summary import summarise

    counts = pa.array([[1, 2], [3], [], [4, 5, 6]], pa.list_(pa.int64()))
    table = pa.table(
        {
            "valid_ranks": pa.array([[5, 0], [3], [], [7, 2, 4]], pa.list_(pa.int64())),
            "llm_calls": pa.array([None] * 4, pa.string()),
            "round_gradients": [
                ["It misses comedy.", "be more specific"],
                ["Heat is missing " + "and so on " * 6],
                [],
                [""],
            ],
            "vocabulary": [Vocabulary(["Comedy", "Drama"], ["Heat (1995)"], {}).to_json()] * 4,
            **dict.fromkeys(("prompt_tokens", "generated_tokens", "cached_tokens"), counts),
        }
    )
    pq.write_table(table.slice(0, 2), tmp_path / "a.parquet")  # a user's lists never span files
    pq.write_table(table.slice(2), tmp_path / "b.parquet")
    summary = summarise(str(tmp_path), TailorMindConfig().llm)
    assert (summary["users"], summary["mean_initial_valid_rank"], summary["stopped_at_rank_1"]) == (4, 5.0, 1)
    assert summary["mean_selected_valid_rank"] == pytest.approx((0 + 3 + 2) / 3)
    assert [r["users"] for r in summary["tokens_per_round"]] == [3, 2, 1]
    assert [r["prompt_tokens"] for r in summary["tokens_per_round"]] == [1 + 3 + 4, 2 + 5, 6]
    assert (summary["gradients"], summary["content_free_gradients"]) == (3, 1)  # "be more specific"
    assert summary["degenerate_gradients"] == 1  # "and so on" six times


def test_the_gradient_prompt_says_which_of_the_users_genres_the_chosen_and_the_preferred_items_carry():
    """SmolLM2's gradients named nothing; the prompt hands it the genres that set the items apart."""
    cards = {"t": "Toy Story | Animation, Comedy", "w1": "Heat | Crime, Drama", "w2": "Alien | Horror, Drama"}
    refiner = ProfileRefiner(load_config(None, []).profiling, cards, 0, catalogue=list(cards))
    genres = ["Drama", "Comedy", "Horror", "Western"]
    row = {
        "user_id": "u",
        "active": True,
        "valid_candidates": ["t", "w1", "w2"],
        "valid_positives": 1,
        "valid_ranks": [2.0],
        "worst_positive": 0,
        "ranked_first": [1, 2, 0],
        "profile": "1. Western (Up (2009))",
        "vocabulary": Vocabulary(genres, ["Up (2009)"], {genre: ["Up (2009)"] for genre in genres}).to_json(),
    }
    (request,) = refiner.gradient_requests(row, 0)
    prompt = request["messages"][-1]["content"]
    assert "the chosen item has: Comedy. Only the items above it have: Drama, Horror." in prompt
    # the answer picks from them: what the profile misses (the chosen item's, not the profile's own) and
    # what it overstates (the profile's, carried only by the items above: none here)
    properties = request["schema"]["properties"]
    assert properties["missing"]["enum"] == ["Comedy", "none"] and properties["overstated"]["enum"] == [
        "none"
    ]
    row["profile"], row["errors"] = "1. Drama (Heat (1995))", []
    properties = refiner.gradient_requests(row, 0)[0]["schema"]["properties"]
    assert properties["overstated"]["enum"] == ["Drama", "none"]
    looping = "the profile has a missing genre, " * 8  # what SmolLM2 wrote for user 509, to the bound
    answer = LLMAnswer("u", {"missing": "Comedy", "overstated": "Drama", "why": looping}, None, 1)
    (update,) = refiner.update_requests(row, [answer], 0)
    said = "Feedback:\nIt misses Comedy. It overstates Drama. the profile has a missing genre,\n"
    assert said in update["messages"][-1]["content"]  # the loop cut to once
    assert row["round_gradients"] == [f"It misses Comedy. It overstates Drama. {looping}"]  # kept as written
    run_on = {"missing": "Comedy", "overstated": "none", "why": "the_legolabelibrickmaker_jumbo_jeopardized"}
    (update,) = refiner.update_requests(row, [LLMAnswer("u", run_on, None, 1)], 1)
    assert "Feedback:\nIt misses Comedy.\n" in update["messages"][-1]["content"]  # beyond repair: left out
