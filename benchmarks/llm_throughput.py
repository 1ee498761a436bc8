"""LLM throughput of the ranking prompts with SmolLM2-135M-Instruct: four paths, each in a process of its own.

Same prompts (each a profile and 100 MovieLens candidates, top 20 as JSON), same model and sampling:
(a) sequential transformers ``generate``, the baseline (no grammar; a subset, it is slow);
(b) the bare vLLM engine in one process (``vllm.LLM.chat``, JSON-schema output), the ceiling;
(c) Ray Data with an in-job vLLM engine (``LLMStep``, backend ``vllm``: ray.data.llm's processor); its
    engine starts inside the pass, so it is timed at two sizes and the difference gives its rate;
(d) Ray Data through the Serve deployment (``LLMStep``, backend ``serve``), engine already up.
Prompts/s, prefill and generated tokens/s, and ratios to (a) and (b). Each path's figures are checkpointed,
so a run cut short resumes with the paths it has not measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from benchmarks.common import RESULTS_DIR, BenchResult, Checkpoints, CoreShares, bar_plot

MODEL = "smollm2://135m-instruct"
CANDIDATES, TOP_K, MAX_TOKENS = 100, 20, 160
PROMPTS, QUICK_PROMPTS = 256, 32
SEQUENTIAL = 8  # prompts of the transformers baseline
WARM_UP = 8  # prompts that warm an engine, never among the timed ones (their prefixes would be cached)
# dtype auto: bf16 with AMX or AVX512-BF16, else float32 (vLLM's bf16 is slow on AVX2); (a) computes the same.
ENGINE = {
    "cpus_per_engine": 2.0,  # both cores: one OpenMP thread per CPU (vLLM's own binding would keep one)
    "dtype": "auto",
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


def sequential_transformers(count: int) -> dict[str, float]:
    """(a) One prompt at a time through transformers ``generate`` (greedy, the engines' dtype), on the first
    ``SEQUENTIAL`` of ``count`` prompts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from models.llm.engine import engine_dtype
    from models.tiny import resolve_model_source

    requests = ranking_requests(min(SEQUENTIAL, count))
    path = resolve_model_source(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=getattr(torch, engine_dtype(_role("vllm")))
    ).eval()
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


def bare_engine(count: int) -> dict[str, Any]:
    """(b) ``vllm.LLM.chat`` over ``count`` prompts in one call, JSON-schema output (engine start not
    timed)."""
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    from models.llm.engine import cpu_engine_environment, engine_kwargs
    from models.tiny import resolve_model_source

    requests = ranking_requests(count + WARM_UP)
    role = _role("vllm")
    inherited = defaultdict(str, os.environ)  # as Ray gives (c) and (d) the env: unset ${NAME} is ""
    os.environ.update({k: Template(v).substitute(inherited) for k, v in cpu_engine_environment(role).items()})
    kwargs = {k: v for k, v in engine_kwargs(role).items() if k != "distributed_executor_backend"}
    # the offline LLM keeps no stats by default; the prefix-cache counters need them
    llm = LLM(model=resolve_model_source(MODEL), disable_log_stats=False, **kwargs)
    params = SamplingParams(
        max_tokens=MAX_TOKENS,
        temperature=0.0,
        structured_outputs=StructuredOutputsParams(json=requests[0]["schema"]),
    )
    llm.chat([r["messages"] for r in requests[count:]], params, use_tqdm=False)  # warm-up
    cores, start = CoreShares(), time.perf_counter()
    outputs = llm.chat([r["messages"] for r in requests[:count]], params, use_tqdm=False)
    seconds = time.perf_counter() - start
    prefill = sum(len(o.prompt_token_ids) for o in outputs)
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    parsed = sum(_parses(o.outputs[0].text) for o in outputs)
    counters = {m.name: getattr(m, "value", 0) for m in llm.get_metrics()}
    queries, hits = counters.get("vllm:prefix_cache_queries", 0), counters.get("vllm:prefix_cache_hits", 0)
    return {
        **_rates(count, seconds, prefill, generated),
        "parsed": parsed,
        "prefix_cache_hit_rate": hits / queries if queries else None,  # vLLM's counters, whole run
        "core_shares": cores.stop(),
    }


def ray_data_pass(requests: list[dict[str, Any]], backend: str) -> dict[str, Any]:
    """(c)/(d) One LLMStep pass over the requests as Parquet-like rows; seconds and token sums."""
    import pyarrow as pa
    import ray.data

    from jobs.llm_step import LLMStep
    from models.llm.rows import request_json, row_answers
    from models.llm.structured import summed_counts

    rows = [{"user": r["row_key"], "rank_requests": [request_json(r)]} for r in requests]
    cores, start = CoreShares(), time.perf_counter()
    answered = LLMStep("rank", _role(backend), 0)(ray.data.from_arrow(pa.Table.from_pylist(rows))).take_all()
    seconds = time.perf_counter() - start
    core_shares = cores.stop()
    prefill = sum(row["rank_prompt_tokens"] for row in answered)
    generated = sum(row["rank_generated_tokens"] for row in answered)
    cached = summed_counts(row["rank_cached_tokens"] for row in answered)  # None on the in-job engine
    parsed = sum(a.error is None for row in answered for a in row_answers(row, "rank"))
    return {
        "seconds": seconds,
        "prefill": prefill,
        "generated": generated,
        "cached": cached,
        "parsed": parsed,
        "core_shares": core_shares,
    }


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


def in_job_path(count: int) -> dict[str, Any]:
    """(c) Ray Data with an in-job engine, timed at 1/8 and all prompts; the difference gives its rate."""
    from models.config import RayConfig
    from runtime.cluster import connect

    connect(RayConfig(num_cpus=8))
    requests = ranking_requests(count)
    small = ray_data_pass(requests[: count // 8], "vllm")
    full = ray_data_pass(requests, "vllm")
    in_job: dict[str, Any] = _rates(
        count - count // 8,
        full["seconds"] - small["seconds"],
        full["prefill"] - small["prefill"],
        full["generated"] - small["generated"],
    )
    return in_job | {
        "parsed": full["parsed"],
        "core_shares": full["core_shares"],  # over the whole pass, the engine's start included
        "end_to_end_seconds": full["seconds"],
        "end_to_end_prompts": count,
    }


def serve_path(count: int) -> dict[str, Any]:
    """(d) Ray Data through the Serve deployment, engine up and warmed before the clock starts."""
    from models.config import RayConfig
    from runtime.cluster import connect
    from runtime.llm import ensure_llm_deployment

    connect(RayConfig(num_cpus=8))
    requests = ranking_requests(count + WARM_UP)
    ensure_llm_deployment(_role("serve"))
    ray_data_pass(requests[count:], "serve")  # warm: worker processes and the engine's first batches
    served = ray_data_pass(requests[:count], "serve")
    through_serve: dict[str, Any] = _rates(count, served["seconds"], served["prefill"], served["generated"])
    # the prefix cache's hit rate on the timed prompts, from the cached tokens Serve reports per answer
    hit_rate = served["cached"] / served["prefill"] if served["cached"] is not None else None
    return through_serve | {
        "parsed": served["parsed"],
        "prefix_cache_hit_rate": hit_rate,
        "core_shares": served["core_shares"],  # where the cores went: the engine, Serve, Ray Data
    }


PATHS = {
    "sequential": ("(a) transformers generate, sequential", sequential_transformers),
    "bare": ("(b) bare vLLM engine (LLM.chat)", bare_engine),
    "in_job": ("(c) Ray Data + in-job vLLM (ray.data.llm)", in_job_path),
    "serve": ("(d) Ray Data + Serve deployment", serve_path),
}


def run(quick: bool = False) -> BenchResult:
    """The four paths on the same prompts, each in a process of its own; ratios against (a) and (b).

    Each path's figures are checkpointed under ``benchmarks/results/partial``: the full run (about four hours
    on 2 cores) spans several sessions, and a rerun measures only the paths it has not finished.
    """
    count = QUICK_PROMPTS if quick else PROMPTS
    result = BenchResult("llm_throughput")
    checkpoints = Checkpoints("llm_throughput")
    from models.llm.engine import engine_dtype

    config = {
        "model": MODEL,
        "engine": ENGINE | {"dtype": engine_dtype(_role("vllm"))},  # as resolved on this machine
        "candidates": CANDIDATES,
        "top_k": TOP_K,
        "max_tokens": MAX_TOKENS,
    }
    measured = {}
    for path in PATHS:  # vLLM's engine must not share a process with Ray's, nor with another engine
        key = f"{count}-prompts-{path}"
        measured[path] = checkpoints.read(key, config) or checkpoints.write(
            key, config, _in_subprocess(path, count)
        )
    baseline, ceiling = measured["sequential"], measured["bare"]
    for path, figures in measured.items():
        result.add(
            method=PATHS[path][0],
            **{name: value for name, value in figures.items() if name != "config"},
            vs_sequential=figures["prompts_per_second"] / baseline["prompts_per_second"],
            vs_bare_engine=figures["prompts_per_second"] / ceiling["prompts_per_second"],
        )
    bar_plot(
        RESULTS_DIR / "llm_throughput.png",
        "ranking prompts/s with SmolLM2-135M (2 CPU cores)",
        [PATHS[path][0].split(" ", 1)[0] for path in measured],
        [figures["prompts_per_second"] for figures in measured.values()],
        "prompts/s",
    )
    result.notes.append(
        f"{count} ranking prompts ({CANDIDATES} candidates, top {TOP_K} as JSON, at most {MAX_TOKENS} new "
        f"tokens), {MODEL}, greedy; (a) on the first {min(SEQUENTIAL, count)} prompts without a grammar"
    )
    result.notes.append(
        "(c)'s rate is the difference of two passes (1/8 and all prompts), so its ~40 s engine start is not "
        "counted; end_to_end_seconds includes it; measured_at is when a path finished (a run cut short "
        "resumes with the paths it has not measured)"
    )
    checkpoints.clear()
    return result


def _in_subprocess(what: str, count: int) -> Any:
    """Measure one path in a fresh process; its figures come back in a file (Ray and Serve print to stdout
    as they shut down, after the figures)."""
    with tempfile.TemporaryDirectory() as folder:
        figures = Path(folder) / "figures.json"
        command = [sys.executable, "-m", "benchmarks.llm_throughput", what, str(count), str(figures)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not figures.is_file():
            raise RuntimeError(f"llm_throughput {what} failed:\n{done.stderr[-3000:]}")
        return json.loads(figures.read_text())


if __name__ == "__main__":
    Path(sys.argv[3]).write_text(json.dumps(PATHS[sys.argv[1]][1](int(sys.argv[2]))))
