"""Refinement never shows the LLM a user's test item; its trace keeps every round's profile and rank."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import jobs.refine
from jobs.profiles import ProfilingInputs
from models.config import load_config
from models.data import encode_interactions, load_dataset
from models.llm.structured import LLMAnswer
from models.profiling.cohort import select_cohort
from tests.datasets import clean_dataset


@pytest.mark.parametrize("permutations", [1, 2])
def test_refinement_prompts_never_contain_test_items(tmp_path, monkeypatch, permutations):
    dataset = load_dataset(clean_dataset(tmp_path, users=6, items=120, per_user=8))
    encoded = encode_interactions(dataset)
    cohort = select_cohort(encoded, None, history_items=5, seed=0)
    cards = [f"CARD-{item_id}" for item_id in encoded.item_ids.to_pylist()]
    user_ids = encoded.user_ids.take(cohort.users).to_pylist()
    inputs = ProfilingInputs(encoded, cohort, user_ids, cards, {})
    sent: list[tuple[str, str]] = []  # (user, prompt)

    def llm(requests, role, seed=0):
        """Stands in for the engine: records every prompt, ranks the positive last, always updates."""
        answers = {}
        for request in requests:
            sent.append((request["row_key"], json.dumps(request["messages"])))
            properties = request["schema"]["properties"]
            if "top" in properties:
                value = {"top": list(range(properties["top"]["minItems"]))}
            elif "gradient" in properties:
                value = {"gradient": "be more specific"}
            else:
                value = {"preferences": [{"preference": f"p{seed}", "reason": "r"}]}
            answers[request["row_key"]] = LLMAnswer(request["row_key"], value, None, 1)
        return answers

    monkeypatch.setattr(jobs.refine, "run_structured", llm)
    config = load_config(
        None, ["profiling.rounds=2", "profiling.rank_top_k=3", f"profiling.rank_permutations={permutations}"]
    )
    initial = {user_id: [{"preference": "films", "reason": "watched many"}] for user_id in user_ids}
    rows = jobs.refine.refine(inputs, initial, config)

    for row, user_id in enumerate(user_ids):
        prompts = " ".join(prompt for user, prompt in sent if user == user_id)
        shown = set(re.findall(r"CARD-[^\s\"\\]+", prompts))
        assert cards[cohort.valid_candidates[row, 0]] in shown  # the validation positive is ranked
        assert cards[cohort.test_candidates[row, 0]] not in shown  # the test positive never is
    rankings = [prompt for _, prompt in sent if "Candidates" in prompt]
    assert len(rankings) == 3 * len(user_ids) * permutations  # P ranking calls per user and round
    for row in rows:
        assert len(row["round_profiles"]) == len(row["valid_ranks"]) == 3  # rounds 0, 1, 2
        assert row["round_profiles"][0] == "1. films (watched many)"
    assert np.all([row["best_round"] is not None for row in rows])
