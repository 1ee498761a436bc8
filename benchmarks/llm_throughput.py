"""LLM throughput of the ranking prompts with SmolLM2-135M-Instruct: four paths in one run.

Same prompts (each a profile and 100 MovieLens candidates, top 20 as JSON), same model and sampling:
(a) sequential transformers ``generate``, the baseline (no grammar; a subset, it is slow);
(b) the bare vLLM engine in this process (``vllm.LLM.chat``, JSON-schema output), the ceiling;
(c) Ray Data with an in-job vLLM engine (``LLMStep``, backend ``vllm``: ray.data.llm's processor); its
    engine starts inside the pass, so it is timed at two sizes and the difference gives its rate;
(d) Ray Data through the Serve deployment (``LLMStep``, backend ``serve``), engine already up.
Prompts/s, prefill and generated tokens/s, and ratios to (a) and (b).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import numpy as np

from benchmarks.common import RESULTS_DIR, BenchResult, bar_plot

MODEL = "smollm2://135m-instruct"
CANDIDATES, TOP_K, MAX_TOKENS = 100, 20, 160
PROMPTS, QUICK_PROMPTS = 256, 32
SEQUENTIAL = 8  # prompts of the transformers baseline
# float32: vLLM's bf16 GEMMs take a slow fallback on this AVX2 CPU (5x slower, measured); same for (a).
ENGINE = {
    "dtype": "float32",
    "max_model_len": 4096,
    "kv_cache_gb": 2.0,
    "batch_size": 32,
    "batches_in_flight": 4,
}


def ranking_requests(count: int) -> list[dict[str, Any]]:
    """``count`` ranking requests over MovieLens cards (seeded): a profile and 100 numbered candidates."""
    from benchmarks.cf_quality import MOVIELENS
    from models.data.movielens import import_movielens
    from models.llm.prompts import rank_template
    from models.profiling.evidence import item_card, numbered_list

    items = import_movielens(MOVIELENS).items.to_pylist()
    rng = np.random.default_rng(0)
    template = rank_template(CANDIDATES, TOP_K)
    profiles = [
        "1. space science fiction (watched Alien and Star Wars)",
        "1. romantic comedies (Notting Hill)",
    ]
    requests = []
    for user in range(count):
        shown = [item_card(items[i]) for i in rng.choice(len(items), CANDIDATES, replace=False)]
        fields = {"profile": profiles[user % 2], "candidates": numbered_list(shown, 10**9, 40)}
        requests.append(
            {"row_key": f"u{user}", "messages": template.messages(fields), "schema": template.schema}
        )
    return requests


def _role(backend: str) -> Any:
    from models.llm.config import RankerConfig

    return RankerConfig(model_source=MODEL, backend=backend, max_tokens=MAX_TOKENS, max_retries=0, **ENGINE)


def sequential_transformers(requests: list[dict[str, Any]]) -> dict[str, float]:
    """(a) One prompt at a time through transformers ``generate`` (greedy, float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from models.tiny import resolve_model_source

    path = resolve_model_source(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prefill = generated = 0
    start = time.perf_counter()
    for request in requests:
        ids = tokenizer.apply_chat_template(
            request["messages"], add_generation_prompt=True, return_tensors="pt"
        )
        ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=MAX_TOKENS, do_sample=False)
        prefill += ids.shape[1]
        generated += out.shape[1] - ids.shape[1]
    return _rates(len(requests), time.perf_counter() - start, prefill, generated)


def bare_engine(requests: list[dict[str, Any]]) -> dict[str, Any]:
    """(b) ``vllm.LLM.chat`` over every prompt in one call, JSON-schema output (engine start not timed)."""
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    from models.llm.engine import engine_kwargs
    from models.tiny import resolve_model_source

    role = _role("vllm")
    kwargs = {k: v for k, v in engine_kwargs(role).items() if k != "distributed_executor_backend"}
    # the offline LLM keeps no stats by default; the prefix-cache counters need them
    llm = LLM(model=resolve_model_source(MODEL), disable_log_stats=False, **kwargs)
    params = SamplingParams(
        max_tokens=MAX_TOKENS,
        temperature=0.0,
        structured_outputs=StructuredOutputsParams(json=requests[0]["schema"]),
    )
    llm.chat([requests[0]["messages"]], params, use_tqdm=False)  # warm-up
    start = time.perf_counter()
    outputs = llm.chat([r["messages"] for r in requests], params, use_tqdm=False)
    seconds = time.perf_counter() - start
    prefill = sum(len(o.prompt_token_ids) for o in outputs)
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    parsed = sum(_parses(o.outputs[0].text) for o in outputs)
    counters = {m.name: getattr(m, "value", 0) for m in llm.get_metrics()}
    queries, hits = counters.get("vllm:prefix_cache_queries", 0), counters.get("vllm:prefix_cache_hits", 0)
    return {
        **_rates(len(requests), seconds, prefill, generated),
        "parsed": parsed,
        "prefix_cache_hit_rate": hits / queries if queries else None,  # vLLM's counters, whole run
    }


def ray_data_pass(requests: list[dict[str, Any]], backend: str) -> dict[str, float]:
    """(c)/(d) One LLMStep pass over the requests as Parquet-like rows; seconds and token sums."""
    import pyarrow as pa
    import ray.data

    from jobs.llm_step import LLMStep, request_json, row_answers

    rows = [{"user": r["row_key"], "rank_requests": [request_json(r)]} for r in requests]
    start = time.perf_counter()
    answered = LLMStep("rank", _role(backend), 0)(ray.data.from_arrow(pa.Table.from_pylist(rows))).take_all()
    seconds = time.perf_counter() - start
    prefill = sum(row["rank_prompt_tokens"] for row in answered)
    generated = sum(row["rank_generated_tokens"] for row in answered)
    parsed = sum(a.error is None for row in answered for a in row_answers(row, "rank"))
    return {"seconds": seconds, "prefill": prefill, "generated": generated, "parsed": parsed}


def _rates(prompts: float, seconds: float, prefill: float, generated: float) -> dict[str, float]:
    return {
        "prompts": prompts,
        "seconds": seconds,
        "prompts_per_second": prompts / seconds,
        "prefill_tokens_per_second": prefill / seconds,
        "generated_tokens_per_second": generated / seconds,
    }


def _parses(text: str) -> bool:
    try:
        return len(json.loads(text)["top"]) == TOP_K
    except (ValueError, KeyError, TypeError):
        return False


def ray_paths(count: int) -> dict[str, dict[str, float]]:
    """(c) and (d) in one Ray session: the in-job engine at two sizes, then the Serve deployment."""
    from models.config import RayConfig
    from runtime.cluster import connect
    from runtime.llm import ensure_llm_deployment

    connect(RayConfig(num_cpus=8))
    requests = ranking_requests(count)
    small = ray_data_pass(requests[: count // 8], "vllm")
    full = ray_data_pass(requests, "vllm")
    marginal = full["seconds"] - small["seconds"]
    in_job = _rates(
        count - count // 8,
        marginal,
        full["prefill"] - small["prefill"],
        full["generated"] - small["generated"],
    )
    in_job.update(parsed=full["parsed"], end_to_end_seconds=full["seconds"], end_to_end_prompts=count)
    ensure_llm_deployment(_role("serve"))
    ray_data_pass(requests[:8], "serve")  # warm: worker processes and the engine's first batches
    served = ray_data_pass(requests, "serve")
    through_serve = _rates(count, served["seconds"], served["prefill"], served["generated"])
    through_serve["parsed"] = served["parsed"]
    return {"in_job": in_job, "serve": through_serve}


def run(quick: bool = False) -> BenchResult:
    """The four paths on the same prompts; ratios against (a) and (b)."""
    count = QUICK_PROMPTS if quick else PROMPTS
    result = BenchResult("llm_throughput")
    requests = ranking_requests(count)
    baseline = sequential_transformers(requests[: min(SEQUENTIAL, count)])
    ceiling = _in_subprocess("bare", count)  # its own process: vLLM's engine must not share Ray's
    paths = _in_subprocess("ray", count)
    rows = [
        ("(a) transformers generate, sequential", baseline),
        ("(b) bare vLLM engine (LLM.chat)", ceiling),
        ("(c) Ray Data + in-job vLLM (ray.data.llm)", paths["in_job"]),
        ("(d) Ray Data + Serve deployment", paths["serve"]),
    ]
    for method, figures in rows:
        result.add(
            method=method,
            **figures,
            vs_sequential=figures["prompts_per_second"] / baseline["prompts_per_second"],
            vs_bare_engine=figures["prompts_per_second"] / ceiling["prompts_per_second"],
        )
    bar_plot(
        RESULTS_DIR / "llm_throughput.png",
        "ranking prompts/s with SmolLM2-135M (2 CPU cores)",
        [method.split(" ", 1)[0] for method, _ in rows],
        [figures["prompts_per_second"] for _, figures in rows],
        "prompts/s",
    )
    result.notes.append(
        f"{count} ranking prompts ({CANDIDATES} candidates, top {TOP_K} as JSON, at most {MAX_TOKENS} new "
        f"tokens), {MODEL}, greedy; (a) on the first {min(SEQUENTIAL, count)} prompts without a grammar"
    )
    result.notes.append(
        "(c)'s rate is the difference of two passes (1/8 and all prompts), so its ~40 s engine start is not "
        "counted; end_to_end_seconds includes it"
    )
    return result


def _in_subprocess(what: str, count: int) -> Any:
    command = [sys.executable, "-m", "benchmarks.llm_throughput", what, str(count)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"llm_throughput {what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    size = int(sys.argv[2])
    if sys.argv[1] == "bare":
        print(json.dumps(bare_engine(ranking_requests(size))))
    else:
        print(json.dumps(ray_paths(size)))
