"""Stage ``refine``: textual-gradient profile refinement (paper eqs. 10-14), all users round by round.

Each round is one Ray Data pass per LLM step over the users still active: rank the validation candidates,
then (for users whose positive is not first) write a textual gradient, then apply it. A user stops at
rank 1 or after ``profiling.rounds`` updates; the profile with the best validation rank is kept. The test
split is never read here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.llm_pass import run_structured
from jobs.profiles import ProfilingInputs, profiling_inputs
from jobs.ray_cluster import connect
from jobs.stage_runner import StageResult
from models.config import TailorMindConfig
from models.llm.prompts import GRADIENT, UPDATE, profile_text, rank_template
from models.profiling.evidence import numbered_list
from models.profiling.ranking import borda_ranking, positive_rank, shown_to_original, shuffle_candidates

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

WRONG_SHOWN = 3  # top-ranked wrong candidates shown to the optimizer


def rank_with_profiles(
    inputs: ProfilingInputs,
    profiles: dict[str, str],
    candidates: np.ndarray,
    config: TailorMindConfig,
    round_index: int,
) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Ranker pass: per user the positive's 0-based rank and the original columns ranked first.

    With ``profiling.rank_permutations`` P > 1 every user's candidates are ranked in P shuffles in the same
    pass and the lists are combined by Borda count (permutation debiasing).
    """
    rows = [i for i, user_id in enumerate(inputs.user_ids) if user_id in profiles]
    permutations = config.profiling.rank_permutations
    orders = [shuffle_candidates(candidates, config.seed, round_index, p) for p in range(permutations)]
    top_k = min(config.profiling.rank_top_k, candidates.shape[1])
    template = rank_template(candidates.shape[1], top_k)
    chars = config.profiling.candidate_chars
    requests = []
    for row in rows:
        for p, order in enumerate(orders):
            shown = [inputs.cards[i] for i in candidates[row][order[row]]]
            fields = {
                "profile": profiles[inputs.user_ids[row]],
                "candidates": numbered_list(shown, 10**9, chars),
            }
            requests.append(
                {
                    "row_key": f"{inputs.user_ids[row]}#{p}",
                    "messages": template.messages(fields),
                    "schema": template.schema,
                }
            )
    answers = run_structured(requests, config.llm.ranker, seed=config.seed + round_index)
    ranks, firsts = {}, {}
    for row in rows:
        user_id = inputs.user_ids[row]
        tops = []
        for p, order in enumerate(orders):
            answer = answers[f"{user_id}#{p}"]
            tops.append(shown_to_original(answer.value["top"] if answer.value else [], order[row]))
        firsts[user_id] = borda_ranking(tops, candidates.shape[1], top_k)
        ranks[user_id] = positive_rank(firsts[user_id], candidates.shape[1])
    return ranks, firsts


def _outcome(rank: int, top_k: int, num_candidates: int) -> str:
    return f"{rank + 1} of {num_candidates}" if rank < top_k else f"outside the top {top_k}"


def refine(
    inputs: ProfilingInputs, initial: dict[str, list[dict[str, str]]], config: TailorMindConfig
) -> list[dict]:
    """Run the rounds and return, per user, the initial and the best profile with the rank history."""
    candidates = inputs.cohort.valid_candidates
    row_of = {user_id: row for row, user_id in enumerate(inputs.user_ids)}
    # a user whose initial profile failed starts from an empty one: the gradient steps can still write it
    current = {user_id: initial.get(user_id) or [] for user_id in inputs.user_ids}
    best: dict[str, tuple[int, list[dict[str, str]], int]] = {}
    history: dict[str, list[int]] = {user_id: [] for user_id in current}
    trace: dict[str, list[str]] = {user_id: [] for user_id in current}  # the profile text of each round
    active = set(current)
    for round_index in range(config.profiling.rounds + 1):
        texts = {user_id: profile_text(current[user_id]) for user_id in active}
        ranks, firsts = rank_with_profiles(inputs, texts, candidates, config, round_index)
        for user_id, rank in ranks.items():
            history[user_id].append(rank)
            trace[user_id].append(texts[user_id])
            if user_id not in best or rank < best[user_id][0]:
                best[user_id] = (rank, current[user_id], round_index)
        active = {user_id for user_id in active if ranks[user_id] > 0}
        if not active or round_index == config.profiling.rounds:
            break
        gradient_requests = []
        for user_id in sorted(active):
            row = candidates[row_of[user_id]]
            wrong = [inputs.cards[row[c]] for c in firsts[user_id] if c != 0][:WRONG_SHOWN]
            fields = {
                "profile": texts[user_id],
                "outcome": _outcome(ranks[user_id], config.profiling.rank_top_k, candidates.shape[1]),
                "wrong": numbered_list(wrong, 10**9, config.profiling.candidate_chars),
                "truth": inputs.cards[row[0]][: config.profiling.candidate_chars * 2],
            }
            gradient_requests.append(
                {"row_key": user_id, "messages": GRADIENT.messages(fields), "schema": GRADIENT.schema}
            )
        gradients = run_structured(gradient_requests, config.llm.optimizer, seed=config.seed + round_index)
        update_requests = [
            {
                "row_key": user_id,
                "messages": UPDATE.messages(
                    {"profile": texts[user_id], "gradient": answer.value["gradient"]}
                ),
                "schema": UPDATE.schema,
            }
            for user_id, answer in gradients.items()
            if answer.value
        ]
        updates = run_structured(update_requests, config.llm.optimizer, seed=config.seed + round_index)
        for user_id, answer in updates.items():
            if answer.value:
                current[user_id] = answer.value["preferences"]
    return [
        {
            "user_id": user_id,
            "profile_initial": profile_text(initial.get(user_id) or []),
            "profile_refined": profile_text(best[user_id][1]) if user_id in best else "",
            "preferences_refined": json.dumps(best[user_id][1] if user_id in best else []),
            "best_round": best[user_id][2] if user_id in best else None,
            "valid_ranks": history.get(user_id, []),
            "round_profiles": trace.get(user_id, []),
        }
        for user_id in inputs.user_ids
    ]


def refine_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``refine``: RUN/refine/profiles.parquet and a summary of the validation ranks."""
    config = pipeline.config

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray)
        inputs = profiling_inputs(pipeline)
        v0 = pq.read_table(pipeline.results["profiles"].path / "profile_v0.parquet").to_pylist()
        initial = {row["user_id"]: json.loads(row["preferences"]) for row in v0}
        rows = refine(inputs, initial, config)
        pq.write_table(pa.Table.from_pylist(rows), out / "profiles.parquet")
        ranked = [r["valid_ranks"] for r in rows if r["valid_ranks"]]
        return {
            "users": len(rows),
            "mean_initial_valid_rank": float(np.mean([r[0] for r in ranked])) if ranked else None,
            "mean_best_valid_rank": float(np.mean([min(r) for r in ranked])) if ranked else None,
            "stopped_at_rank_1": sum(1 for r in ranked if min(r) == 0),
            "rounds": config.profiling.rounds,
        }

    section = {
        "llm": [config.llm.ranker, config.llm.optimizer],
        "profiling": config.profiling,
        "seed": config.seed,
    }
    inputs = [pipeline.results[name].path for name in ("profiles", "captions", "data")]
    return pipeline.runner.run("refine", build, config=section, inputs=inputs)
