"""The LLM half at two cohort sizes: initial profiles plus one refinement round, driver and worker memory.

Each size runs in a fresh process (its own local Ray cluster and Serve LLM deployment, tiny chat model):
synthetic users -> cohort -> item cards (no VLM) -> profiles -> refine (round 0: rank, gradient, update;
round 1: rank). The parent samples the resident memory of the driver and of every Ray worker and engine
process twice a second; the driver's own peak comes from ``getrusage``. What must hold: the driver's
peak does not grow with users (within 10% between sizes at least 10x apart, and under 1.5 GB).

The same run measures the fixed cost of one LLM pass (one prompt, engine already up): the old way (rows
built in the driver, ``from_items``, ray.data.llm's Serve processor, ``take_all``) against an ``LLMStep``
over Parquet.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, TINY_CHAT_SETTINGS, BenchResult, MemorySampler, serve_roles

SIZES = (300, 3_000)
QUICK_SIZES = (50, 500)
SETTINGS = [
    "profiling.max_users=null",
    *TINY_CHAT_SETTINGS,
    "profiling.cf_items=0",
    *serve_roles(("profiler", "ranker", "optimizer")),
    "llm.profiler.max_tokens=48",
    "llm.ranker.max_tokens=16",
    "llm.optimizer.max_tokens=48",
    "ray.num_cpus=8",
]


def run_size(users: int, out: Path) -> dict[str, Any]:
    """One size, in this process: the stages up to refine; seconds, counts and the driver's peak RSS."""
    from jobs.captions import captions_stage
    from jobs.cohort import cohort_stage
    from jobs.data import data_stage
    from jobs.dataset import dataset_stage
    from jobs.pipeline import PipelineRun
    from jobs.profiles import profiles_stage
    from jobs.refine import refine_stage
    from jobs.stage_runner import StageRunner
    from models.config import load_config

    overrides = [*SETTINGS, f"data.synth.users={users}", f"data.synth.items={max(500, users // 10)}"]
    overrides += [f"data.synth.interactions={users * 12}", "data.synth.image_share=0"]
    config = load_config(None, overrides)
    pipeline = PipelineRun(StageRunner(out), config)
    for name, stage in (("dataset", dataset_stage), ("data", data_stage), ("cohort", cohort_stage)):
        pipeline.results[name] = stage(pipeline)
    pipeline.results["captions"] = captions_stage(pipeline)
    llm_seconds = 0.0
    for name, stage in (("profiles", profiles_stage), ("refine", refine_stage)):
        pipeline.results[name] = stage(pipeline)
        llm_seconds += pipeline.results[name].seconds
    marker = json.loads((out / "refine" / "_stage.json").read_text())["summary"]
    cohort = json.loads((out / "cohort" / "_stage.json").read_text())["summary"]
    return {
        "users": cohort["users"],
        "llm_seconds": llm_seconds,
        "users_per_second": cohort["users"] / llm_seconds,
        "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "stopped_at_rank_1": marker["stopped_at_rank_1"],
    }


def pass_overhead(repeats: int = 3) -> dict[str, float]:
    """Seconds of a one-prompt pass, engine up: driver-collected processor pass vs an LLMStep on Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray.data

    from jobs.llm_step import LLMStep
    from models.config import load_config
    from models.llm.prompts import PROFILE
    from models.llm.rows import request_json
    from runtime.cluster import connect
    from runtime.llm import ensure_llm_deployment

    role = load_config(None, SETTINGS).llm.profiler
    connect(load_config(None, SETTINGS).ray)
    target = ensure_llm_deployment(role)
    messages = PROFILE.messages({"history": "[0] a film", "recommended": "(none)"})
    request: dict[str, Any] = {"messages": messages, "schema": PROFILE.schema}
    folder = Path(tempfile.mkdtemp(prefix="llm-pass-"))
    pq.write_table(
        pa.table({"user": ["u0"], "profile_requests": [[request_json(request)]]}), folder / "in.parquet"
    )

    def collected_pass() -> None:
        rows = [{"row_key": "u0", "request": request_json(request)}]
        list(_serve_processor(role, target)(ray.data.from_items(rows)).take_all())

    def step_pass() -> None:
        answered = LLMStep("profile", role, 0)(ray.data.read_parquet(str(folder / "in.parquet")))
        answered.write_parquet(str(folder / f"out-{time.monotonic_ns()}"))

    timings = {}
    for name, fn in (("collected_processor_pass", collected_pass), ("llm_step_pass", step_pass)):
        fn()  # warm: the first pass also starts worker processes
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        timings[name] = min(samples)
    return timings


def _serve_processor(role: Any, target: tuple[str, str]) -> Any:
    """The per-pass processor the LLM stages used before (ray.data.llm's Serve deployment processor)."""
    from ray.data.llm import ServeDeploymentProcessorConfig, build_processor
    from ray.serve.llm.openai_api_models import ChatCompletionRequest

    from models.llm.requests import structured_chat_request

    app_name, deployment_name = target
    config = ServeDeploymentProcessorConfig(
        deployment_name=deployment_name,
        app_name=app_name,
        dtype_mapping={"ChatCompletionRequest": ChatCompletionRequest},
        batch_size=role.batch_size,
        concurrency=role.num_engines,
        should_continue_on_error=True,
    )

    def preprocess(row: dict[str, Any]) -> dict[str, Any]:
        request = json.loads(row["request"])
        body = structured_chat_request(role, request["messages"], json.dumps(request["schema"]), 0)
        return {
            "row_key": row["row_key"],
            "method": "chat",
            "dtype": "ChatCompletionRequest",
            "request_kwargs": body,
        }

    return build_processor(config, preprocess=preprocess, postprocess=lambda row: {"row_key": row["row_key"]})


def measure(users: int) -> dict[str, Any]:
    """Run one size in a fresh process and sample its workers' memory meanwhile."""
    out = Path(tempfile.mkdtemp(prefix=f"llm-scale-{users}-"))
    command = [sys.executable, "-m", "benchmarks.llm_scale", str(users), str(out)]
    log = (out / "run.log").open("w")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    with MemorySampler(process.pid) as sampler:
        stdout, _ = process.communicate()
    log.close()
    if process.returncode != 0:
        raise RuntimeError(f"llm_scale at {users} users failed; see {out / 'run.log'}")
    row = json.loads(stdout.strip().splitlines()[-1])
    return {**row, "max_worker_rss_mb": sampler.max_worker_mb, "max_worker": sampler.max_worker_name}


def run(quick: bool = False) -> BenchResult:
    """Both sizes, then the per-pass overhead; the driver's peak must not follow the number of users."""
    result = BenchResult("llm_scale")
    for users in QUICK_SIZES if quick else SIZES:
        result.add(**measure(users))
    small, large = result.rows[0], result.rows[-1]
    growth = large["driver_peak_rss_mb"] / small["driver_peak_rss_mb"] - 1
    result.notes.append(
        f"driver peak RSS grows {100 * growth:+.1f}% from {small['users']} to {large['users']} users "
        f"(goal: within 10%, under 1500 MB)"
    )
    overhead = json.loads(
        subprocess.run(
            [sys.executable, "-m", "benchmarks.llm_scale", "overhead"],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    result.add(
        method="per-pass overhead",
        **overhead,
        ratio=overhead["collected_processor_pass"] / overhead["llm_step_pass"],
    )
    _plot(result)
    result.notes.append(
        "tiny random chat model on Ray Serve, 10 candidates of 24 characters, small max_tokens"
    )
    return result


def _plot(result: BenchResult) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [row for row in result.rows if "users" in row]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    users = [row["users"] for row in sizes]
    axes[0].plot(users, [row["driver_peak_rss_mb"] for row in sizes], "o-", label="driver peak")
    axes[0].plot(users, [row["max_worker_rss_mb"] for row in sizes], "s-", label="largest worker")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("users")
    axes[0].set_ylabel("RSS (MB)")
    axes[0].legend()
    axes[0].set_title("memory vs users")
    axes[1].bar([str(u) for u in users], [row["users_per_second"] for row in sizes], color="#3b7dd8")
    axes[1].set_xlabel("users")
    axes[1].set_ylabel("users/s (profiles + 1 round)")
    axes[1].set_title("throughput")
    fig.tight_layout()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS_DIR / "llm_scale.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    if sys.argv[1] == "overhead":
        print(json.dumps(pass_overhead()))
    else:
        print(json.dumps(run_size(int(sys.argv[1]), Path(sys.argv[2]))))
