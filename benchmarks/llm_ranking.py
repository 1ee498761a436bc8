"""Ranking-stage LLM throughput: Ray Data + vLLM (behind Serve) vs a sequential transformers loop."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.cf_quality import MOVIELENS
from benchmarks.common import RESULTS_DIR, BenchResult, bar_plot
from jobs.llm_step import LLMStep, request_json, row_answers
from models.config import RayConfig, load_config
from models.data.movielens import import_movielens
from models.llm.prompts import rank_template
from models.profiling.evidence import numbered_list
from models.tiny import resolve_model_source
from runtime.cluster import connect

CANDIDATES, TOP_K, MAX_TOKENS = 100, 20, 96


def _requests(count: int) -> list[dict]:
    titles = import_movielens(MOVIELENS).items["title"].to_pylist()
    rng = np.random.default_rng(0)
    template = rank_template(CANDIDATES, TOP_K)
    requests = []
    for user in range(count):
        shown = [titles[i] for i in rng.choice(len(titles), CANDIDATES, replace=False)]
        fields = {
            "profile": "1. sci-fi classics (rewatches them)",
            "candidates": numbered_list(shown, 10**9, 40),
        }
        requests.append(
            {"row_key": f"u{user}", "messages": template.messages(fields), "schema": template.schema}
        )
    return requests


def _sequential_transformers(requests: list[dict]) -> tuple[float, int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_source("tiny://chat")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    start, generated = time.perf_counter(), 0
    for request in requests:
        ids = tokenizer.apply_chat_template(
            request["messages"], add_generation_prompt=True, return_tensors="pt"
        )
        ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=MAX_TOKENS, do_sample=True, temperature=0.7)
        generated += out.shape[1] - ids.shape[1]
    return time.perf_counter() - start, generated


def run(quick: bool = False) -> BenchResult:
    """Prompts/s and generated tokens/s of both paths on the same ranking prompts and tiny model."""
    result = BenchResult("llm_ranking")
    count = 16 if quick else 64
    requests = _requests(count)
    seconds, generated = _sequential_transformers(requests[: max(4, count // 4)])
    base = max(4, count // 4) / seconds
    result.add(
        method="transformers generate, sequential",
        prompts=max(4, count // 4),
        prompts_per_second=base,
        generated_tokens_per_second=generated / seconds,
        ratio=1.0,
    )
    connect(RayConfig(num_cpus=8))
    role = load_config(
        None,
        [
            "llm.ranker.backend=serve",
            f"llm.ranker.max_tokens={MAX_TOKENS}",
            "llm.ranker.max_model_len=4096",
            "llm.ranker.max_retries=0",
        ],
    ).llm.ranker
    import pyarrow as pa
    import ray.data

    def dataset(batch: list[dict]) -> ray.data.Dataset:
        rows = [{"user": r["row_key"], "rank_requests": [request_json(r)]} for r in batch]
        return ray.data.from_arrow(pa.Table.from_pylist(rows))

    LLMStep("rank", role, 0)(
        dataset(requests[:4])
    ).take_all()  # deploys the engine once; later steps reuse it
    start = time.perf_counter()
    answered = LLMStep("rank", role, 0)(dataset(requests)).take_all()
    seconds = time.perf_counter() - start
    tokens = sum(row["rank_generated_tokens"] for row in answered)
    answers = [a for row in answered for a in row_answers(row, "rank")]
    rate = count / seconds
    result.add(
        method="Ray Data + vLLM (Serve), structured JSON",
        prompts=count,
        prompts_per_second=rate,
        generated_tokens_per_second=tokens / seconds,
        ratio=rate / base,
        parsed=sum(a.error is None for a in answers),
    )
    bar_plot(
        RESULTS_DIR / "llm_ranking.png",
        "ranking prompts/s vs sequential transformers",
        [r["method"] for r in result.rows],
        [r["ratio"] for r in result.rows],
        "ratio",
    )
    result.notes.append(
        f"{CANDIDATES} candidates per prompt, top {TOP_K}, max {MAX_TOKENS} new tokens, tiny chat model"
    )
    result.notes.append(
        "LLM calls per user per refinement round: 1 ranking, plus 1 gradient and 1 update when rank > 1"
    )
    return result
