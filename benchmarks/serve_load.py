"""Serve load on loopback: /v1/generate requests/s and latency per concurrency, and the @serve.batch speedup.

All parts run in one run, for the image and the video diffusion models: the pipeline in process (8
one-item calls vs one call of 8: what batching can give on this hardware), the diffusion deployment alone
at max_batch_size 1 (the baseline) and at 8 under the same concurrent load; then the whole demo
application under HTTP load at several concurrencies, each bounded in requests and seconds, ratios
against concurrency 1; and open-loop overload at 2x and 8x the best closed-loop rate, where the ingress's
``max_queued_requests`` sheds what it cannot queue (goodput, 503 share, latency of the 200s); then the
scorer's and the diffusion replica's process is killed under load (in-flight statuses, seconds until
/healthz is healthy again).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ray import serve

from benchmarks.common import RESULTS_DIR, BenchResult, bar_plot
from models.config import DiffusionDeploymentConfig, load_config
from models.generation.diffusion import ImageGenerator, VideoGenerator
from runtime.cluster import connect, serve_replica_pid
from serve.app import APP_NAME, diffusion_deployment, http_options, tailormind_app

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "serve-demo.yaml"
PORT = 8123
HISTORY = [
    {"title": "Toy Story", "text": "animated adventure about toys", "tags": ["pixar", "family"]},
    {"title": "Heat", "text": "a crime thriller in Los Angeles", "tags": ["heist"]},
    {"title": "Amélie", "text": "a whimsical romance in Montmartre", "tags": ["paris"]},
]


def _deployment_items_per_second(config, medium: str, batch_size: int, items: int) -> float:
    """Images (or clips)/s of a diffusion deployment under ``items`` concurrent single-item calls."""
    settings = DiffusionDeploymentConfig(max_batch_size=batch_size, max_ongoing_requests=2 * items)
    app = diffusion_deployment(f"bench-{medium}", settings).bind(config.generation, medium)
    handle = serve.run(app, name="bench-diffusion", route_prefix=None)
    handle.generate.remote("warm up", 0).result()
    start = time.perf_counter()
    responses = [handle.generate.remote(f"a poster of film number {i}", i) for i in range(items)]
    for response in responses:
        response.result()
    seconds = time.perf_counter() - start
    serve.delete("bench-diffusion")
    return items / seconds


def _pipeline_batch_speedup(generator: ImageGenerator | VideoGenerator, items: int) -> float:
    """In-process diffusion: seconds for ``items`` one-item calls over seconds for one batched call."""
    prompts, seeds = [f"a poster of film number {i}" for i in range(items)], list(range(items))
    generator.generate(prompts[:1], seeds[:1])
    start = time.perf_counter()
    for prompt, seed in zip(prompts, seeds, strict=True):
        generator.generate([prompt], [seed])
    one_by_one = time.perf_counter() - start
    start = time.perf_counter()
    generator.generate(prompts, seeds)
    return one_by_one / (time.perf_counter() - start)


def _post(url: str, body: dict) -> tuple[float, int, str]:
    """(seconds, HTTP status, error detail) of one POST."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    start = time.perf_counter()
    detail = ""
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        status, detail = error.code, _error_detail(error.read())
    except OSError as error:
        status, detail = 0, str(error)
    return time.perf_counter() - start, status, detail


def _error_detail(body: bytes) -> str:
    """The ``detail`` of a JSON error body, or the body's text when it is not one (a proxy's own error)."""
    try:
        return str(json.loads(body)["detail"])
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")


def _load(url: str, videos: int, concurrency: int, requests: int, budget_s: float) -> dict:
    """Requests/s and latency percentiles of ``requests`` generate calls, ``concurrency`` at a time."""
    body = {"history": HISTORY, "num_images": 1, "num_videos": videos, "reflection_rounds": 0}
    bodies = [body | {"seed": i} for i in range(requests)]
    deadline = time.perf_counter() + budget_s
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(
            pool.map(
                lambda body: _post(url, body) if time.perf_counter() < deadline else (0.0, -1, ""), bodies
            )
        )
    seconds = time.perf_counter() - start
    done = [latency for latency, status, _ in results if status == 200]
    latencies = sorted(done)
    errors = [f"{status}: {detail[:200]}" for _, status, detail in results if status not in (200, -1)]
    return {
        "videos_per_post": videos,
        "concurrency": concurrency,
        "requests": len(done),
        "errors": len(errors),
        "error_details": sorted(set(errors)),
        "skipped_over_budget": sum(1 for _, status, _ in results if status == -1),
        "requests_per_second": len(done) / seconds,
        "p50_s": statistics.median(latencies) if latencies else None,
        "p99_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None,
    }


def _overload(url: str, capacity_rps: float, factor: float, seconds: float) -> dict:
    """Open-loop arrivals at ``factor`` x capacity for ``seconds``: goodput, 503 share, 200s' latency."""
    body = {"history": HISTORY, "num_images": 1, "num_videos": 0, "reflection_rounds": 0}
    rate = factor * capacity_rps
    arrivals = [i / rate for i in range(max(1, int(rate * seconds)))]
    start = time.perf_counter()

    def arrive(at: float) -> tuple[float, int, str]:
        time.sleep(max(0.0, start + at - time.perf_counter()))
        return _post(url, body | {"seed": int(at * 1000)})

    with ThreadPoolExecutor(len(arrivals)) as pool:
        results = list(pool.map(arrive, arrivals))
    elapsed = time.perf_counter() - start
    served = sorted(latency for latency, status, _ in results if status == 200)
    shed = sorted(latency for latency, status, _ in results if status == 503)
    return {
        "offered_x_capacity": factor,
        "offered": len(results),
        "goodput_rps": len(served) / elapsed,
        "shed_share": len(shed) / len(results),
        "other_statuses": sorted({status for _, status, _ in results if status not in (200, 503)}),
        "p50_s": statistics.median(served) if served else None,
        "p99_s": served[min(len(served) - 1, int(0.99 * len(served)))] if served else None,
        "max_shed_s": shed[-1] if shed else None,
    }


def _fault_recovery(server: str, deployment: str) -> dict:
    """SIGKILL ``deployment``'s replica under 2 in-flight posts: their statuses, and the seconds until
    /healthz reports every deployment healthy again (after reporting the degraded state)."""
    body = {"history": HISTORY, "num_images": 1, "num_videos": 0, "reflection_rounds": 0}
    victim = serve_replica_pid(APP_NAME, deployment)
    with ThreadPoolExecutor(2) as pool:
        pending = [pool.submit(_post, f"{server}/v1/generate", body | {"seed": 100 + i}) for i in range(2)]
        time.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        killed = time.perf_counter()
        degraded_seen, recovered_s = False, None
        while time.perf_counter() - killed < 300:
            healthy = _healthy(server)
            degraded_seen = degraded_seen or not healthy
            if degraded_seen and healthy:
                recovered_s = time.perf_counter() - killed
                break
            time.sleep(0.5)
        statuses = [future.result()[1] for future in pending]
    after = _post(f"{server}/v1/generate", body | {"seed": 200})
    return {
        "deployment": deployment,
        "in_flight_statuses": statuses,
        "degraded_seen": degraded_seen,
        "recovered_s": recovered_s,
        "status_after": after[1],
    }


def _healthy(server: str) -> bool:
    """Whether /healthz answers 200 (every deployment healthy)."""
    try:
        with urllib.request.urlopen(f"{server}/healthz", timeout=30) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def run(quick: bool = False) -> BenchResult:
    """The diffusion batching speedup and the HTTP load table, measured in one run."""
    result = BenchResult("serve_load")
    config = load_config(CONFIG, [f"serve.port={PORT}"])
    connect(config.ray)
    serve.start(http_options=http_options(config.serve))

    items = 8 if quick else 16
    labels, ratios = [], []
    for medium, generator_class in (("image", ImageGenerator), ("video", VideoGenerator)):
        in_process = _pipeline_batch_speedup(generator_class.from_config(config.generation), 8)
        result.add(
            part=f"{medium} pipeline in process (no Serve)", max_batch_size=8, items=8, ratio=in_process
        )
        single = _deployment_items_per_second(config, medium, 1, items)
        batched = _deployment_items_per_second(config, medium, 8, items)
        for size, rate in ((1, single), (8, batched)):
            part = f"{medium} diffusion deployment"
            result.add(
                part=part, max_batch_size=size, items=items, items_per_second=rate, ratio=rate / single
            )
        labels += [f"{medium} pipeline batch 8", f"{medium} deployment batch 8"]
        ratios += [in_process, batched / single]

    serve.run(tailormind_app(config), name=APP_NAME, route_prefix="/")
    url = f"http://127.0.0.1:{PORT}/v1/generate"
    _post(url, {"history": HISTORY, "num_images": 1, "num_videos": 1, "reflection_rounds": 0})  # warm up
    for videos in (0, 1):
        rows = [
            _load(url, videos, concurrency, requests=3 * concurrency, budget_s=180)
            for concurrency in ((1, 2, 4) if not quick else (1, 2))
        ]
        base = rows[0]["requests_per_second"]
        for row in rows:
            result.add(part="http /v1/generate", **row, ratio=row["requests_per_second"] / base)
            labels.append(f"HTTP {videos} clip c={row['concurrency']}")
            ratios.append(row["requests_per_second"] / base)
        if videos == 0:  # past capacity (the best closed-loop rate): the ingress sheds what it cannot queue
            capacity = max(row["requests_per_second"] for row in rows)
            for factor in (2.0, 8.0):
                row = _overload(url, capacity, factor, seconds=30 if quick else 90)
                result.add(part="http /v1/generate overload", **row, ratio=row["goodput_rps"] / capacity)
    for deployment in ("scorer", "diffusion"):
        row = _fault_recovery(f"http://127.0.0.1:{PORT}", deployment)
        result.add(part="http /v1/generate replica killed", **row)
    serve.delete(APP_NAME)

    bar_plot(
        RESULTS_DIR / "serve_load.png",
        "Serve: speedup vs baseline (diffusion batch 1; HTTP concurrency 1)",
        labels,
        ratios,
        "ratio",
    )
    gen, video = config.generation, config.generation.video
    result.notes.append(
        f"tiny models; diffusion and scoring on {gen.device}: images {gen.image_steps} steps at "
        f"{gen.image_size}px, clips of {video.frames} frames at {video.height}x{video.width}, "
        f"{video.steps} steps; "
        "generate requests with 3 history items, 1 image and 0 or 1 clip, no reflection round; every LLM "
        "call goes to one "
        "vLLM engine (CPU here)"
    )
    return result
