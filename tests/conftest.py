"""Shared fixtures: the real MovieLens sample, the repository root, the Ray cluster, headless Chromium."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """``$TAILORMIND_SHARED_DATA`` or the ``shared/data`` folder beside the checkout."""
    env = os.environ.get("TAILORMIND_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def movielens_src() -> Path:
    """MovieLens latest-small as GroupLens ships it (read in place, never copied into the project)."""
    path = shared_data_root() / "ml-latest-small"
    assert (path / "ratings.csv").is_file(), (
        f"MovieLens latest-small not found at {path}; set TAILORMIND_SHARED_DATA to the folder holding it"
    )
    return path


# Logical CPUs of the test cluster: most actors of an LLM pipeline (chat template, tokenizer, Serve
# handles) wait on the engine, so a 2-core machine needs more scheduling slots than cores. Each engine's
# placement group holds 2 (its bundle and its Serve replica); the session keeps the shared engines and
# the Serve app's replicas up while Ray Data passes still need room to start (with 12, a CI run's Serve
# app waited forever for its scorer and ingress).
TEST_CLUSTER_CPUS = 16


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


SERVE_PORT = free_port()


Reply = tuple[int, dict[str, Any] | None, dict[str, str]]  # status, JSON body (or none), headers


@contextlib.contextmanager
def json_endpoint(reply: Callable[[dict[str, Any]], Reply]) -> Iterator[str]:
    """A local HTTP server that answers each POSTed JSON body with ``reply(body)``; yields its /v1 URL."""

    class Endpoint(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            status, answer, headers = reply(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            body = json.dumps(answer).encode() if answer is not None else b""
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()


@pytest.fixture(scope="session")
def ray_cluster():
    """One private local Ray cluster shared by every test that needs Ray, with Serve on a free port."""
    import ray
    from ray import serve

    from models.config import RayConfig, ServeConfig
    from runtime.cluster import connect
    from serve.app import http_options

    connect(RayConfig(num_cpus=TEST_CLUSTER_CPUS))
    # Serve's HTTP port is fixed when Serve first starts; start it here so no test depends on port 8000.
    serve.start(http_options=http_options(ServeConfig(port=SERVE_PORT)))
    yield ray
    serve.shutdown()
    ray.shutdown()


@pytest.fixture
def llm_apps_released(ray_cluster):
    """Deletes the pipeline LLM apps a test started: engines no later test shares free their memory (each
    holds 2-4 GB here, and the Serve app's tests need room for their own)."""
    from ray import serve

    before = set(serve.status().applications)
    yield
    for name in set(serve.status().applications) - before:
        if name.startswith("tailormind-llm-"):
            serve.delete(name)


@pytest.fixture(scope="session")
def serve_port(ray_cluster) -> int:
    """The HTTP port of the test cluster's Serve proxy."""
    return SERVE_PORT


@pytest.fixture(scope="session")
def tiny_models() -> Path:
    """The tiny offline models, built once where ``tiny://`` sources resolve (a no-op when current)."""
    from models.tiny import build_tiny_models, default_models_dir

    build_tiny_models()
    return default_models_dir()


# The flags this machine's closed network needs (no background connections) and root needs (no sandbox).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_executable() -> str | None:
    """``$TAILORMIND_CHROMIUM``, else the first Chromium or Chrome on ``PATH``."""
    configured = os.environ.get("TAILORMIND_CHROMIUM")
    if configured:
        return configured
    names = ("chromium", "chromium-browser", "google-chrome")
    return next((path for name in names if (path := shutil.which(name))), None)


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium driven by Playwright, shared by the page tests (``make test`` installs it)."""
    executable = chromium_executable()
    if executable is None:
        pytest.fail(
            "the page tests need headless Chromium: 'make test' installs Debian's chromium package; "
            "elsewhere set TAILORMIND_CHROMIUM to a Chromium or Chrome binary, or deselect: -m 'not browser'"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()
