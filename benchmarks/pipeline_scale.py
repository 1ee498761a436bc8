"""Every stage at two sizes: seconds, the driver's peak RSS, the largest worker's RSS, rows in and out.

Synthetic datasets (100k items, about 24 interactions per user) at 100k and 1M users run ``dataset``,
``data``, ``cf`` (to its early stop or ``CF_BUDGET_S`` at the smaller size, ``CF_STEP_CAP`` steps at the
larger), ``topk``, ``cohort`` and ``report`` over every user. The LLM stages (``profiles``, one refinement
round, ``eval`` and ``generate`` with one version and no images or clips, with what they need:
``captions``, ``catalogue``, ``priors``) run over cohorts of 1k and 10k users of the smaller dataset, with
the tiny chat model and short prompts. Every stage runs alone and forced in a fresh process, on the
finished stages before it, with a local cluster of its own: that process's peak RSS is the driver's, and
this one samples every Ray worker and engine process meanwhile. A finished stage is a checkpoint
(``benchmarks/results/partial/pipeline_scale/``), so a cut-short run resumes at the next stage on the same
machine (the run folders it needs are under the ignored ``benchmarks/results/raw/``); ``run(budget_s=...)``
starts no stage after its budget and writes what it measured.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS_DIR,
    TINY_CHAT_SETTINGS,
    BenchResult,
    Checkpoints,
    MemorySampler,
    save_figure,
    serve_roles,
)
from jobs.stage_runner import MARKER

SIZES = (100_000, 1_000_000)
COHORTS = (1_000, 10_000)
QUICK_SIZES, QUICK_COHORTS = (2_000, 20_000), (20, 200)
ITEMS, QUICK_ITEMS = 100_000, 5_000
INTERACTIONS_PER_USER = 24
CF_STEP_CAP = 100  # at the larger size: an epoch of 24M pairs is about 6,000 steps
CF_BUDGET_S = 900  # at the smaller size: training stops at its early stop or after this many seconds
CF_EVALUATION = "cf evaluation"  # not a stage: the cf stage's test evaluation alone, on its kept embeddings
DATA_STAGES = ("dataset", "data", "cf", CF_EVALUATION, "topk", "cohort", "report")
LLM_STAGES = (
    "cohort",
    "feedback",
    "captions",
    "catalogue",
    "priors",
    "profiles",
    "refine",
    "eval",
    "generate",
    "report",
)
SHARED_STAGES = ("dataset", "data", "cf", "topk")  # the cohort runs reuse the smaller size's
PEAK = "PIPELINE_SCALE "  # the child's figures line
FIGURES = ("seconds", "driver_peak_rss_mb", "max_worker_rss_mb", "max_worker")
CHAT_ROLES = ("summarizer", "profiler", "ranker", "optimizer", "writer")
LLM_SETTINGS = [
    *TINY_CHAT_SETTINGS,
    "profiling.cf_items=3",
    "profiling.valid_positives=1",
    *serve_roles(CHAT_ROLES),
    "llm.profiler.max_tokens=256",  # a grounded profile's JSON (at 48 tokens every profile failed)
    "llm.ranker.max_tokens=16",
    "llm.optimizer.max_tokens=256",
    "llm.writer.max_tokens=400",
    "generation.num_images=0",
    "generation.num_videos=0",
    "generation.reflection_rounds=0",
    "generation.batch_size=64",  # users a writer actor takes at a time: the engine batches their prompts
]


def run(quick: bool = False, budget_s: float | None = None) -> BenchResult:
    """Every stage of every size (finished ones read back), then the growth per stage and a plot. With
    ``budget_s``, no stage starts after that many seconds: the result holds what was measured and names the
    rest, whose parts a later run measures."""
    deadline = time.monotonic() + budget_s if budget_s else math.inf
    result = BenchResult("pipeline_scale")
    missing: list[str] = []
    parts = Checkpoints("pipeline_scale")
    sizes, cohorts = (QUICK_SIZES, QUICK_COHORTS) if quick else (SIZES, COHORTS)
    items = QUICK_ITEMS if quick else ITEMS
    for users in sizes:
        settings = [*_dataset_settings(users, items), "profiling.max_users=null"]
        cf_bound = f"cf.max_steps={CF_STEP_CAP}" if users == sizes[-1] else f"cf.time_budget_s={CF_BUDGET_S}"
        settings.append(cf_bound)
        run_dir = parts.work_folder(f"users {users}")
        for stage in DATA_STAGES:
            _add(result, missing, _part(parts, ("users", users, stage), run_dir, settings, deadline))
    for cohort in cohorts:
        settings = [*_dataset_settings(sizes[0], items), *LLM_SETTINGS]
        settings += [f"profiling.max_users={cohort}", f"generation.max_users={cohort}"]
        run_dir = parts.work_folder(f"cohort {cohort}")
        _share_stages(parts.work_folder(f"users {sizes[0]}"), run_dir)
        for stage in LLM_STAGES:
            _add(result, missing, _part(parts, ("cohort", cohort, stage), run_dir, settings, deadline))
    _growth(result, "users", sizes)
    _growth(result, "cohort", cohorts)
    _plot(result)
    result.notes += [
        f"synthetic: {items} items, {INTERACTIONS_PER_USER} interactions per user asked (the dataset rows' "
        "counts: those kept once repeats are dropped); the cohort runs use "
        f"the {sizes[0]}-user dataset; cf at {sizes[0]} users: to its early stop or {CF_BUDGET_S} s of "
        f"training, at {sizes[-1]} users: {CF_STEP_CAP} steps",
        "each stage alone in a fresh process with its own local Ray cluster (so its seconds include Ray's "
        "start); driver_peak_rss_mb: that process's peak; max_worker_rss_mb: the largest Ray worker, actor "
        "or engine process sampled twice a second",
        "goals (issue 34): at the larger size every stage's driver peak within 10% of the smaller's and "
        "under 1,500 MB, the largest worker within 25% (model state excepted, with its size)",
    ]
    if missing:
        result.notes.append(f"not measured yet (no time left in the run's budget): {', '.join(missing)}")
    elif not quick and not any("failed" in row for row in result.rows):
        parts.clear()
    return result


def _add(result: BenchResult, missing: list[str], part: tuple[str, dict[str, Any] | None]) -> None:
    key, row = part
    if row is None:
        missing.append(key)
    else:
        result.add(**row)


def _dataset_settings(users: int, items: int) -> list[str]:
    return [
        f"data.synth.users={users}",
        f"data.synth.items={items}",
        "data.synth.tags=200",
        f"data.synth.interactions={users * INTERACTIONS_PER_USER}",
        "data.synth.image_share=0",
        "ray.num_cpus=8",
    ]


def _share_stages(source: Path, run_dir: Path) -> None:
    """Hard-link the smaller size's finished dataset, data, cf and topk into a cohort run's folder."""
    for stage in SHARED_STAGES:
        if (source / stage / MARKER).exists() and not (run_dir / stage).exists():
            shutil.copytree(source / stage, run_dir / stage, copy_function=os.link)


def _part(
    parts: Checkpoints, where: tuple[str, int, str], run_dir: Path, settings: list[str], deadline: float
) -> tuple[str, dict[str, Any] | None]:
    """One stage (``where``: size kind, size, stage) in a fresh process, its memory sampled meanwhile (read
    back when measured before); no row when it was not measured and the deadline has passed."""
    size, users, stage = where
    key, marker = f"{size} {users} {stage}", run_dir / stage / MARKER
    kept = parts.read(key, settings) if marker.exists() else None
    if kept is None and time.monotonic() > deadline:
        return key, None
    if kept is None:  # not measured, or measured on another machine whose run folder is not here
        command = [sys.executable, "-m", "benchmarks.pipeline_scale", str(run_dir), stage, *settings]
        log = (run_dir / f"{stage}.log").open("w")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        with MemorySampler(process.pid) as sampler:
            stdout, _ = process.communicate()
        log.close()
        if process.returncode != 0:  # a finding at this size (out of memory, say): kept as a row, not a part
            return key, {"stage": stage, size: users, "failed": _last_error(run_dir / f"{stage}.log")}
        figures = {
            "seconds": json.loads(marker.read_text())["seconds"],
            "driver_peak_rss_mb": _reported(stdout)["driver_peak_rss_mb"],
            "max_worker_rss_mb": round(sampler.max_worker_mb, 1),
            "max_worker": sampler.max_worker_name,
        }
        kept = parts.write(key, settings, figures)
    counts = _counts(json.loads(marker.read_text()).get("summary", {}))
    return key, {"stage": stage, size: users, **{k: kept[k] for k in FIGURES}, "counts": counts}


def _last_error(log: Path) -> str:
    """The last line of a failed stage's log that names an error, else its last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or ["no output"])[-1][:300]


def _reported(stdout: str) -> dict[str, Any]:
    """The child's figures: its last stdout line that starts with PEAK (Ray may print after it)."""
    lines = [line for line in stdout.splitlines() if line.startswith(PEAK)]
    return json.loads(lines[-1][len(PEAK) :])


def _counts(summary: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The stage summary's numbers, one level of nesting flattened (``interactions.accepted``): its rows in
    and out."""
    counts: dict[str, Any] = {}
    for key, value in summary.items():
        if isinstance(value, dict) and not prefix:
            counts.update(_counts(value, f"{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            counts[prefix + key] = value
    return counts


def _growth(result: BenchResult, size: str, sizes: tuple[int, int]) -> None:
    """Per stage: the larger size's driver and worker peaks over the smaller's."""
    rows = {(row["stage"], row[size]): row for row in result.rows if size in row and "seconds" in row}
    for stage in dict.fromkeys(stage for stage, _ in rows):
        small, large = rows.get((stage, sizes[0])), rows.get((stage, sizes[1]))
        if small is None or large is None:
            continue
        result.add(
            stage=stage,
            growth=f"{size} {sizes[0]} -> {sizes[1]}",
            driver_rss_ratio=round(large["driver_peak_rss_mb"] / small["driver_peak_rss_mb"], 3),
            worker_rss_ratio=round(large["max_worker_rss_mb"] / max(small["max_worker_rss_mb"], 1.0), 3),
            seconds_ratio=round(large["seconds"] / max(small["seconds"], 1e-3), 2),
        )


def _plot(result: BenchResult) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, size in zip(axes, ("users", "cohort"), strict=True):
        rows = [row for row in result.rows if size in row and "seconds" in row]
        stages = list(dict.fromkeys(row["stage"] for row in rows))
        for value in sorted({row[size] for row in rows}):
            peaks = {row["stage"]: row["driver_peak_rss_mb"] for row in rows if row[size] == value}
            workers = {row["stage"]: row["max_worker_rss_mb"] for row in rows if row[size] == value}
            axis.plot(stages, [peaks.get(s, float("nan")) for s in stages], "o-", label=f"driver, {value}")
            axis.plot(stages, [workers.get(s, float("nan")) for s in stages], "s--", label=f"worker, {value}")
        axis.set_title(f"peak RSS per stage by {size}")
        axis.set_ylabel("MB")
        axis.tick_params(axis="x", rotation=45)
        axis.legend(fontsize=7)
    return save_figure(fig, RESULTS_DIR / "pipeline_scale.png")


def _stage_process(run_dir: str, stage: str, settings: list[str]) -> None:
    """Child process: one stage (forced) on the finished earlier stages that the run folder holds (the
    report reads whichever exist); prints the process's peak RSS."""
    from jobs.pipeline import STAGES, PipelineRun, stage_function
    from jobs.stage_runner import StageRunner
    from models.config import load_config

    config = load_config(None, settings)
    if stage == CF_EVALUATION:
        _cf_evaluation(Path(run_dir), config)
    else:
        pipeline = PipelineRun(StageRunner(Path(run_dir), force={stage}), config)
        for name in list(STAGES)[: list(STAGES).index(stage)]:
            if (pipeline.runner.path(name) / MARKER).exists():
                pipeline.results[name] = pipeline.runner.finished(name)
        stage_function(stage)(pipeline)
    print(
        PEAK + json.dumps({"driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    )


def _cf_evaluation(run_dir: Path, config: Any) -> None:
    """The cf stage's test evaluation of its kept embeddings, alone; its seconds and metrics in a marker
    as a stage's."""
    from runtime.cf_evaluation import evaluate
    from runtime.cluster import connect

    connect(config.ray, run_dir)
    started = time.perf_counter()
    metrics = evaluate(run_dir / "cf" / "embeddings", str(run_dir / "data"), config)
    summary = {
        "recall@20": metrics["recall@20"],
        "most_popular_recall@20": metrics["most_popular"]["recall@20"],
    }
    (run_dir / CF_EVALUATION).mkdir(exist_ok=True)
    marker = {"seconds": round(time.perf_counter() - started, 3), "summary": summary}
    (run_dir / CF_EVALUATION / MARKER).write_text(json.dumps(marker))


if __name__ == "__main__":
    _stage_process(sys.argv[1], sys.argv[2], sys.argv[3:])
