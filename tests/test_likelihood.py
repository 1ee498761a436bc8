"""The likelihood ranker: continuation log-probabilities on every backend, PMI, and ranks from scores."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from jobs.score_step import ScoreStep
from models.llm.config import LLMRoleConfig
from models.llm.rows import scoring_json
from models.llm.scoring import ScoredContinuation, continuation_logprob, score_distinct, scoring_request
from models.profiling.likelihood import (
    best_first,
    likelihood_requests,
    pmi_scores,
    positive_ranks,
    prior_requests,
)
from models.profiling.ranking import listed_positive_ranks
from tests.conftest import Reply, json_endpoint

TOKENS = [5, 9, 7, 3, 8]  # a prefix of 3 tokens and a continuation of 2


def _entries(values: dict[int, float]) -> list[dict[int, float] | None]:
    return [None] + [{TOKENS[p]: v} for p, v in values.items()]


def test_a_continuation_sums_its_own_tokens_and_is_missing_where_the_cache_served_them():
    logprobs = _entries({1: -1.0, 2: -2.0, 3: -0.5, 4: -0.25})
    assert continuation_logprob(logprobs, TOKENS, start=3) == pytest.approx(-0.75)
    assert continuation_logprob(logprobs, TOKENS, start=3, computed_from=2) == pytest.approx(-0.75)
    # position 3's value comes from position 2: read from the cache, it has none
    assert continuation_logprob(logprobs, TOKENS, start=3, computed_from=3) is None
    wrong = [*logprobs[:3], {42: -0.1}, logprobs[4]]  # an entry without the position's own token
    assert continuation_logprob(wrong, TOKENS, start=3) is None
    ray_style = [None] + [{t: {"logprob": -1.0, "rank": 1}} for t in TOKENS[1:]]
    assert continuation_logprob(ray_style, TOKENS, start=1) == pytest.approx(-4.0)


def test_a_repeated_pair_is_scored_once_and_its_repeats_compute_nothing():
    asked: list[list[str]] = []

    def score(requests: list[dict]) -> dict[str, ScoredContinuation]:
        asked.append([r["row_key"] for r in requests])
        return {
            r["row_key"]: ScoredContinuation(r["row_key"], -len(r["continuation"]), 2, 9, 4) for r in requests
        }

    requests = [
        scoring_request("0/0", "likes horror", "Alien"),
        scoring_request("0/1", "likes horror", "Babe"),
        scoring_request("0/2", "likes horror", "Alien"),  # the unchanged refined profile asks again
        scoring_request("1/0", "likes romance", "Alien"),
    ]
    scores = score_distinct(requests, score)
    assert asked == [["0/0", "0/1", "1/0"]]
    assert sorted(scores) == ["0/0", "0/1", "0/2", "1/0"]
    assert scores["0/2"].row_key == "0/2" and scores["0/2"].logprob == scores["0/0"].logprob == -5
    assert scores["0/2"].computed_tokens == 0 and scores["0/0"].computed_tokens == 4


def test_pmi_ranks_the_positives_among_the_negatives_and_an_unscored_candidate_sinks():
    scores = pmi_scores([-3.0, -2.0, -5.0, None, -1.0], [-4.0, -1.0, -5.0, -1.0, None])
    assert scores.tolist() == [1.0, -1.0, 0.0, -math.inf, -math.inf]
    assert positive_ranks(scores, 2).tolist() == [0, 1]  # 1.0 beats every negative; -1.0 loses to 0.0
    assert best_first(scores, 3) == [0, 2, 1]
    assert positive_ranks(pmi_scores([None, -1.0], [-1.0, -2.0]), 1).tolist() == [1]
    assert listed_positive_ranks([4, 1, 0, 3], positives=2, negatives=3) == [1, 1]
    assert listed_positive_ranks([4], positives=1, negatives=3) == [3]


def test_requests_put_each_card_after_the_profiles_prefix_and_priors_after_the_empty_one():
    cards = {"a": "Alien (1979) | sci-fi horror", "b": "Babe (1995)\nfamily"}
    asked = likelihood_requests("u", "1. horror (Alien)", ["a", "b"], cards, chars=12)
    assert [r["row_key"] for r in asked] == ["u#0", "u#1"]
    assert asked[0]["prefix"].endswith("next:\n") and "1. horror (Alien)" in asked[0]["prefix"]
    assert [r["continuation"] for r in asked] == ["Alien (1979)", "Babe (1995) "]
    priors = prior_requests(["b"], cards, chars=12)
    assert priors[0]["row_key"] == "b" and "horror" not in priors[0]["prefix"]


def _rows(prefixes: list[str], cards: list[str]) -> pa.Table:
    """One row per prefix asking for every card after it."""
    asked = [[scoring_json(scoring_request("", p, c)) for c in cards] for p in prefixes]
    return pa.table({"user": [f"u{i}" for i in range(len(prefixes))], "s_requests": asked})


# vLLM caches whole blocks of the prompt (128 tokens on CPU): a profile prefix longer than one is shared
_LIKES = (
    "space operas with slow builds, hard science fiction about first contact, desert planets, robots that "
    "learn to feel, heist films with ensemble casts, 1970s paranoid thrillers, quiet character studies, "
    "time loops, films scored by synthesizers, stories told from the villain's side, long single takes, "
    "documentaries about oceans and the people who sail them, animated features for adults, noir set in "
    "the rain, courtroom dramas where the verdict is not the point, and musicals that end badly"
)
PREFIXES = [
    f"Preferences: {_LIKES}; above all, sci-fi and space.\nNext item:\n",
    f"Preferences: {_LIKES}; above all, romance.\nNext item:\n",
]
CARDS = ["Alien (1979) | sci-fi horror", "Notting Hill (1999) | romance", "Babe (1995) | family"]


def _scores(rows: list[dict]) -> dict[str, list[float]]:
    return {row["user"]: row["s_scores"] for row in rows}


@pytest.mark.slow
def test_serve_and_the_in_job_engine_score_alike_and_serve_reads_the_cached_prefix(ray_cluster, tiny_models):
    """The tiny chat model through both vLLM backends: finite scores, the same to a tolerance, the same in
    any row order; the Serve deployment computes each continuation's tail, not the shared prefix."""
    serve_role = LLMRoleConfig(backend="serve", max_tokens=32, max_model_len=4096)  # test_llm_step's engine
    served = ScoreStep("s", serve_role)(ray_cluster.data.from_arrow(_rows(PREFIXES, CARDS))).take_all()
    by_serve = _scores(served)
    for row in served:
        assert all(v is not None and math.isfinite(v) and v < 0 for v in row["s_scores"])
        assert row["s_computed_tokens"] < row["s_prompt_tokens"]  # the prefix came from the cache
    reordered = ScoreStep("s", serve_role)(ray_cluster.data.from_arrow(_rows(PREFIXES[::-1], CARDS[::-1])))
    again = {row["user"]: row["s_scores"] for row in reordered.take_all()}
    for i in range(len(PREFIXES)):  # order-free: the same (prefix, card) scores the same
        np.testing.assert_allclose(again[f"u{1 - i}"][::-1], by_serve[f"u{i}"], rtol=0.02, atol=0.05)
    in_job = LLMRoleConfig(backend="vllm", max_tokens=32, max_model_len=4096)
    processed = ScoreStep("s", in_job)(ray_cluster.data.from_arrow(_rows(PREFIXES, CARDS))).take_all()
    for row in processed:
        np.testing.assert_allclose(row["s_scores"], by_serve[row["user"]], rtol=0.02, atol=0.05)
        assert row["s_computed_tokens"] == row["s_prompt_tokens"]  # the processor reads no prefix cache
    batched = serve_role.model_copy(update={"scorer": "transformers"})
    for row in ScoreStep("s", batched)(ray_cluster.data.from_arrow(_rows(PREFIXES, CARDS))).take_all():
        np.testing.assert_allclose(row["s_scores"], by_serve[row["user"]], rtol=0.02, atol=0.05)
        prefix_tokens = (row["s_prompt_tokens"] - row["s_computed_tokens"]) / (len(CARDS) - 1)
        assert prefix_tokens > 100  # each prefix computed once, not once per card


def test_the_prefix_scorer_equals_whole_prompts_and_computes_each_prefix_once(tiny_models):
    """Continuations batched on a prefix's cached keys and values (padded to the longest) score what each
    whole prompt scores alone; a prefix's tokens are computed with its first continuation only."""
    import torch

    from models.llm.prefix_scoring import PrefixScorer
    from models.tiny import resolve_model_source

    scorer = PrefixScorer(resolve_model_source("tiny://chat"), "float32", batch_size=2)  # 3 cards: 2 batches
    requests = [
        scoring_request(f"{p}/{c}", prefix, card)
        for p, prefix in enumerate(PREFIXES)
        for c, card in enumerate(CARDS)
    ]
    scored = scorer.score(requests)
    for request in requests:
        prefix = scorer.tokenizer.encode(request["prefix"])
        tail = scorer.tokenizer.encode(request["continuation"], add_special_tokens=False)
        with torch.no_grad():
            logits = scorer.model(input_ids=torch.tensor([prefix + tail])).logits[0].float()
        alone = (
            torch.log_softmax(logits, -1)[len(prefix) - 1 : -1].gather(-1, torch.tensor(tail)[:, None]).sum()
        )
        got = scored[request["row_key"]]
        assert got.logprob == pytest.approx(float(alone), abs=1e-3) and got.tokens == len(tail)
        first = request["row_key"].endswith("/0")
        assert got.computed_tokens == len(tail) + first * len(prefix) and got.prompt_tokens == len(
            prefix
        ) + len(tail)


def test_http_scores_from_the_completions_route_and_a_server_without_logprobs_is_a_config_error():
    from models.errors import TailorMindError
    from runtime.chat import HttpChat

    bodies: list[dict] = []

    def reply(body: dict) -> Reply:
        bodies.append(body)
        prompt = body["prompt"]
        words = prompt.split(" ")
        offsets = np.cumsum([0] + [len(w) + 1 for w in words[:-1]]).tolist()
        logprobs = {
            "tokens": words,
            "token_logprobs": [None] + [-1.0] * (len(words) - 1),
            "text_offset": offsets,
        }
        choice = {"text": prompt, "logprobs": logprobs if "bare" not in prompt else None}
        return 200, {"choices": [choice], "usage": {"prompt_tokens": len(words)}}, {}

    with json_endpoint(reply) as base_url:
        client = HttpChat(LLMRoleConfig(backend="http", base_url=base_url, max_retries=0), api_key="")
        scored = client.score([scoring_request("a", "the user likes ", "space opera films")])["a"]
        assert (scored.logprob, scored.tokens) == (-3.0, 3)  # the three words after the prefix
        assert bodies[0]["echo"] is True and bodies[0]["logprobs"] == 0
        with pytest.raises(TailorMindError, match="prompt log-probabilities"):
            client.score([scoring_request("b", "bare ", "prompt")])
