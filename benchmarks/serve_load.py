"""Serve load on loopback: /v1/generate requests/s and latency per concurrency, and the @serve.batch speedup.

All parts run in one run: the diffusion pipeline in process (8 one-image calls vs one call of 8: what
batching can give on this hardware), the diffusion deployment alone at max_batch_size 1 (the baseline)
and at 8 under the same concurrent load, then the whole demo application under HTTP load at several
concurrencies, each bounded in requests and seconds, ratios against concurrency 1.
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ray import serve

from benchmarks.common import RESULTS_DIR, BenchResult, bar_plot
from jobs.ray_cluster import connect
from models.config import load_config
from models.generation.images import ImageGenerator
from serve.app import APP_NAME, tailormind_app
from serve.deployments import ImageDeployment

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "serve-demo.yaml"
PORT = 8123
HISTORY = [
    {"title": "Toy Story", "text": "animated adventure about toys", "tags": ["pixar", "family"]},
    {"title": "Heat", "text": "a crime thriller in Los Angeles", "tags": ["heist"]},
    {"title": "Amélie", "text": "a whimsical romance in Montmartre", "tags": ["paris"]},
]


def _diffusion_images_per_second(config, batch_size: int, images: int) -> float:
    """Images/s of the diffusion deployment under ``images`` concurrent single-image calls."""
    batching = {"max_batch_size": batch_size, "batch_wait_timeout_s": 0.05}
    app = serve.deployment(
        ImageDeployment, name="diffusion", user_config=batching, max_ongoing_requests=2 * images
    ).bind(config.generation)
    handle = serve.run(app, name="bench-diffusion", route_prefix=None)
    handle.generate.remote("warm up", 0).result()
    start = time.perf_counter()
    responses = [handle.generate.remote(f"a poster of film number {i}", i) for i in range(images)]
    for response in responses:
        response.result()
    return images / (time.perf_counter() - start)


def _pipeline_batch_speedup(config, images: int) -> float:
    """In-process diffusion: seconds for ``images`` one-image calls over seconds for one batched call."""
    generator = ImageGenerator.from_config(config.generation)
    prompts, seeds = [f"a poster of film number {i}" for i in range(images)], list(range(images))
    generator.generate(prompts[:1], seeds[:1])
    start = time.perf_counter()
    for prompt, seed in zip(prompts, seeds, strict=True):
        generator.generate([prompt], [seed])
    one_by_one = time.perf_counter() - start
    start = time.perf_counter()
    generator.generate(prompts, seeds)
    return one_by_one / (time.perf_counter() - start)


def _post(url: str, body: dict) -> tuple[float, int]:
    """(seconds, HTTP status) of one POST."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError:
        status = 0
    return time.perf_counter() - start, status


def _load(url: str, concurrency: int, requests: int, budget_s: float) -> dict:
    """Requests/s and latency percentiles of ``requests`` generate calls, ``concurrency`` at a time."""
    bodies = [
        {"history": HISTORY, "num_images": 1, "reflection_rounds": 0, "seed": i} for i in range(requests)
    ]
    deadline = time.perf_counter() + budget_s
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(
            pool.map(lambda body: _post(url, body) if time.perf_counter() < deadline else (0.0, -1), bodies)
        )
    seconds = time.perf_counter() - start
    done = [latency for latency, status in results if status == 200]
    latencies = sorted(done)
    return {
        "concurrency": concurrency,
        "requests": len(done),
        "errors": sum(1 for _, status in results if status not in (200, -1)),
        "skipped_over_budget": sum(1 for _, status in results if status == -1),
        "requests_per_second": len(done) / seconds,
        "p50_s": statistics.median(latencies) if latencies else None,
        "p99_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] if latencies else None,
    }


def run(quick: bool = False) -> BenchResult:
    """The diffusion batching speedup and the HTTP load table, measured in one run."""
    result = BenchResult("serve_load")
    config = load_config(CONFIG, [f"serve.port={PORT}"])
    connect(config.ray)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})

    images = 8 if quick else 16
    in_process = _pipeline_batch_speedup(config, 8)
    result.add(part="diffusion pipeline in process (no Serve)", max_batch_size=8, images=8, ratio=in_process)
    single = _diffusion_images_per_second(config, 1, images)
    batched = _diffusion_images_per_second(config, 8, images)
    serve.delete("bench-diffusion")
    result.add(part="diffusion", max_batch_size=1, images=images, images_per_second=single, ratio=1.0)
    result.add(
        part="diffusion", max_batch_size=8, images=images, images_per_second=batched, ratio=batched / single
    )

    serve.run(tailormind_app(config), name=APP_NAME, route_prefix="/")
    url = f"http://127.0.0.1:{PORT}/v1/generate"
    _post(url, {"history": HISTORY, "num_images": 1, "reflection_rounds": 0})  # warm every deployment
    rows = []
    for concurrency in (1, 2, 4) if not quick else (1, 2):
        rows.append(_load(url, concurrency, requests=3 * concurrency, budget_s=180))
    base = rows[0]["requests_per_second"]
    for row in rows:
        result.add(part="http /v1/generate", **row, ratio=row["requests_per_second"] / base)
    serve.delete(APP_NAME)

    bar_plot(
        RESULTS_DIR / "serve_load.png",
        "Serve: speedup vs baseline (diffusion batch 1; HTTP concurrency 1)",
        ["pipeline batch 8", "deployment batch 8"] + [f"HTTP c={row['concurrency']}" for row in rows],
        [in_process, batched / single] + [row["requests_per_second"] / base for row in rows],
        "ratio",
    )
    gen = config.generation
    result.notes.append(
        f"tiny models; diffusion and scoring on {gen.device}, {gen.image_steps} steps at {gen.image_size}px; "
        "generate requests with 3 history items, 1 image, no reflection round; every LLM call goes to one "
        "vLLM engine (CPU here)"
    )
    return result
