"""What one ranking of 100 candidates costs with SmolLM2 on this machine, each way it can be done.

For the same 10 MovieLens users (their initial profiles, their 100 test candidates), in one run: the
likelihood ranker on a transformers actor that encodes each profile once and scores the 100 cards as
batches on its cached keys and values (``scorer: transformers``; the time includes the actor's start and
its weights' load, as each pipeline step pays them), through the Serve deployment reading the shared
profile prefix from vLLM's prefix cache (with 32-token KV blocks; and with vLLM CPU's default 128-token
blocks, which no profile prefix fills, so nothing is read from the cache), the same deployment computing
every prompt whole (the naive way: vLLM reads no cache for requests that ask for prompt log-probabilities),
the in-job ``ray.data.llm`` processor (naive too, and it starts its own engine), and the listwise ranker
(one generated ranking per user). Per ranking: prompt tokens, tokens computed, and seconds; the Serve ways
and the listwise ranker on warm engines.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import RESULTS_DIR, BenchResult, bar_plot

USERS, QUICK_USERS = 10, 2
SHARED_PREFIX = "likelihood, Serve, shared prefix, 32-token blocks"
BATCHED = "likelihood, transformers actor, cached prefix"
PROCESSOR = "likelihood, ray.data.llm processor"
COLD = {  # ways timed with their start (each pipeline step pays it), the others on a warm engine
    BATCHED: "includes the actor's start and the weights' load",
    PROCESSOR: "includes the engine's start",
}


def run(quick: bool = False) -> BenchResult:
    """Each way on the same users, after a warm-up call of each engine."""
    import tempfile
    from pathlib import Path

    import ray.data
    from ray import serve

    from benchmarks.profiling_quality import overrides
    from jobs.eval import TEST_ROUND
    from jobs.llm_step import LLMStep
    from jobs.pipeline import run_pipeline
    from jobs.score_step import ScoreStep
    from models.config import load_config
    from models.llm.rows import request_json, scoring_json
    from models.profiling.likelihood import likelihood_requests
    from models.profiling.refiner import rank_requests
    from runtime.artifacts import PROFILES
    from runtime.llm import deployment_names

    result = BenchResult("ranker_cost")
    users = QUICK_USERS if quick else USERS
    run_dir = Path(tempfile.mkdtemp(prefix="ranker-cost-"))
    config = load_config(None, overrides(users))
    run_pipeline(run_dir, config, until="profiles")
    table = pq.read_table(run_dir / "profiles" / PROFILES, columns=["user_id", "text", "test_candidates"])
    cards_table = pq.read_table(run_dir / "captions" / "items.parquet", columns=["item_id", "card"])
    cards = dict(zip(cards_table["item_id"].to_pylist(), cards_table["card"].to_pylist(), strict=True))
    rows = table.to_pylist()
    settings = config.profiling
    scoring = [
        [
            scoring_json(r)
            for r in likelihood_requests(
                row["user_id"], row["text"], row["test_candidates"], cards, settings.candidate_chars
            )
        ]
        for row in rows
    ]
    listwise = [
        [
            request_json(r)
            for r in rank_requests(
                row["user_id"],
                row["user_id"],
                row["text"],
                row["test_candidates"],
                cards,
                settings,
                config.seed,
                TEST_ROUND,
            )
        ]
        for row in rows
    ]
    ranker = config.llm.ranker.model_copy(update={"scorer": "engine"})
    default_blocks = ranker.model_copy(update={"kv_block_size": None})  # its own engine, deleted after use
    batched = ranker.model_copy(update={"scorer": "transformers"})
    ways: dict[str, Any] = {
        SHARED_PREFIX: lambda ds: ScoreStep("s", ranker)(ds),
        BATCHED: lambda ds: ScoreStep("s", batched)(ds),
        "likelihood, Serve, shared prefix, 128-token blocks": lambda ds: ScoreStep("s", default_blocks)(ds),
        "likelihood, Serve, whole prompts": lambda ds: _naive_serve(ds, ranker),
        PROCESSOR: lambda ds: ScoreStep("s", ranker.model_copy(update={"backend": "vllm"}))(ds),
    }
    scores: dict[str, dict[str, list[float]]] = {}  # way -> user -> the cards' scores
    for name, way in ways.items():
        data = ray.data.from_arrow(pa.table({"user_id": table["user_id"], "s_requests": scoring}))
        if name not in COLD:
            way(
                ray.data.from_arrow(pa.table({"user_id": ["warm"], "s_requests": [scoring[0][:2]]}))
            ).take_all()
        started = time.perf_counter()
        out = way(data).take_all()
        seconds = time.perf_counter() - started
        scores[name] = {r["user_id"]: r["s_scores"] for r in out}
        result.add(
            way=name,
            rankings=len(out),
            prompt_tokens_per_ranking=sum(r["s_prompt_tokens"] for r in out) / len(out),
            computed_tokens_per_ranking=sum(r["s_computed_tokens"] or 0 for r in out) / len(out),
            seconds_per_ranking=seconds / len(out),
            failed=sum(v is None for r in out for v in r["s_scores"]),
            note=COLD.get(name, "warm engine"),
            **_agreement(scores[name], scores[SHARED_PREFIX]),
        )
        if "128-token" in name:  # two SmolLM2 engines and the processor's would not fit this node's CPUs
            serve.delete(deployment_names(default_blocks)[0])
    data = ray.data.from_arrow(pa.table({"user_id": table["user_id"], "l_requests": listwise}))
    started = time.perf_counter()
    out = LLMStep("l", ranker, config.seed)(data).take_all()
    seconds = time.perf_counter() - started
    result.add(
        way="listwise, Serve",
        rankings=len(out),
        prompt_tokens_per_ranking=sum(r["l_prompt_tokens"] for r in out) / len(out),
        computed_tokens_per_ranking=sum(r["l_prompt_tokens"] - (r["l_cached_tokens"] or 0) for r in out)
        / len(out),
        generated_tokens_per_ranking=sum(r["l_generated_tokens"] for r in out) / len(out),
        seconds_per_ranking=seconds / len(out),
        note="warm engine",
    )
    base = next(row["seconds_per_ranking"] for row in result.rows if row["way"] == SHARED_PREFIX)
    for row in result.rows:
        row["vs_shared_prefix"] = row["seconds_per_ranking"] / base
    bar_plot(
        RESULTS_DIR / "ranker_cost.png",
        "seconds per ranking of 100 candidates (SmolLM2, 2 cores)",
        [row["way"].replace(", ", "\n") for row in result.rows],
        [row["seconds_per_ranking"] for row in result.rows],
        "seconds",
    )
    result.notes.append(
        f"{users} MovieLens users' initial profiles and 100 test candidates each; cards of 40 characters"
    )
    return result


def _agreement(scores: dict[str, list[float]], reference: dict[str, list[float]]) -> dict[str, float]:
    """How far one way's card scores are from the shared-prefix way's (nats; unscored cards left out)."""
    import numpy as np

    pairs = np.array(
        [
            (a, b)
            for user, row in scores.items()
            for a, b in zip(row, reference[user], strict=True)
            if a is not None and b is not None
        ]
    ).reshape(-1, 2)
    gaps = np.abs(pairs[:, 0] - pairs[:, 1])
    return {
        "max_abs_diff_vs_shared_prefix": float(gaps.max()),
        "mean_abs_diff_vs_shared_prefix": float(gaps.mean()),
    }


def _naive_serve(ds: Any, role: Any) -> Any:
    """The scoring step through the deployment with its prefix cache unread."""
    from models.llm.rows import with_scores
    from runtime.chat import ServeChat
    from runtime.llm import ensure_llm_deployment

    ensure_llm_deployment(role)

    def batch_scores(batch: pa.Table) -> pa.Table:
        import json

        client = ServeChat.for_role(role)
        client.read_cache = False
        requests = [
            {"row_key": f"{row}/{index}", **json.loads(text)}
            for row, asked in enumerate(batch["s_requests"].to_pylist())
            for index, text in enumerate(asked)
        ]
        return with_scores(batch, "s", client.score(requests))

    return ds.map_batches(batch_scores, batch_format="pyarrow", batch_size=role.batch_size, num_cpus=0.25)
