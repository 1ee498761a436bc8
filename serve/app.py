"""The TailorMind Serve application, built from a config: ``serve run serve.app:build_app config=FILE``.

One LLM deployment per distinct model of the captioner, profiler and writer roles (ray.serve.llm, vLLM
inside), a batched image diffusion deployment (and a video one when configured), a CLIP + MiniLM scorer, and
an ingress that serves the OpenAI routes and the TailorMind API over them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.deployment import Application, Deployment

from models.config import (
    DiffusionDeploymentConfig,
    SafetyConfig,
    ServeConfig,
    TailorMindConfig,
    load_config,
)
from models.errors import TailorMindError
from runtime.cluster import connect
from runtime.llm import deployment_names, llm_server_config
from serve.deployments import DiffusionDeployment, ScorerDeployment, deployment_options
from serve.generation import llm_roles
from serve.ingress import TailorMindIngress, token_digest

log = logging.getLogger("tailormind.serve")
APP_NAME = "tailormind"


def build_app(args: dict[str, Any]) -> Application:
    """Serve's application builder; ``args``: ``config`` (a YAML file) and optional ``overrides`` list."""
    return tailormind_app(load_config(args.get("config"), args.get("overrides") or []))


def tailormind_app(config: TailorMindConfig) -> Application:
    """The application graph of a config: ingress bound to the LLM, diffusion and scorer deployments."""
    served = config.serve
    if config.generation.num_videos and served.video is None:
        raise TailorMindError(
            f"generation.num_videos is {config.generation.num_videos}, but serve.video is not set, so the "
            "app would have no video model: configure serve.video (its replicas and resources) or set "
            "generation.num_videos=0."
        )
    llm_configs: dict[str, Any] = {}
    for role in (getattr(config.llm, name) for name in llm_roles(config)):
        # Roles naming the same model share its deployment, with the engine settings of the first role.
        llm_configs.setdefault(role.served_model_id, llm_server_config(role, deployment_names(role)[1]))
    # Renderers do not see the safety settings, so changing them restarts only the scorer and the ingress.
    rendering = config.generation.model_copy(update={"safety": SafetyConfig()})
    images = diffusion_deployment("diffusion", served.diffusion).bind(rendering, "image")
    videos = (
        diffusion_deployment("video", served.video).bind(rendering, "video")
        if served.video is not None
        else None
    )
    scorer = serve.deployment(ScorerDeployment, name="scorer", **deployment_options(served.scorer)).bind(
        config.generation
    )
    settings = config.model_copy(
        update={"serve": served.model_copy(update={"media_roots": _media_roots(served.media_roots)})}
    )
    from ray.serve.llm import build_openai_app

    return build_openai_app(
        {
            "llm_configs": list(llm_configs.values()),
            "ingress_cls_config": {
                "ingress_cls": TailorMindIngress,
                "ingress_extra_kwargs": {
                    "images": images,
                    "videos": videos,
                    "scorer": scorer,
                    "settings": settings.model_dump(),
                    "token_sha256": _token_sha256(served.auth_token_env),
                },
            },
            "ingress_deployment_config": deployment_options(served.ingress),
        }
    )


def diffusion_deployment(name: str, config: DiffusionDeploymentConfig) -> Deployment:
    """A diffusion deployment whose ``@serve.batch`` settings travel as its ``user_config``."""
    batching = {"max_batch_size": config.max_batch_size, "batch_wait_timeout_s": config.batch_wait_timeout_s}
    return serve.deployment(
        DiffusionDeployment, name=name, user_config=batching, **deployment_options(config)
    )


def http_options(served: ServeConfig) -> dict[str, Any]:
    """Serve's HTTP proxy options: where it listens and how long a request may take (then 408)."""
    return {"host": served.host, "port": served.port, "request_timeout_s": served.request_timeout_s}


def serve_until_stopped(config: TailorMindConfig) -> None:
    """Start the application on the configured host and port and keep it up until SIGINT or SIGTERM."""
    connect(config.ray)
    served = config.serve
    serve.start(http_options=http_options(served))
    serve.run(tailormind_app(config), name=APP_NAME, route_prefix="/")
    print(
        f"TailorMind serves http://{served.host}:{served.port}: GET /healthz, POST /v1/profile, "
        "POST /v1/generate, POST /v1/feedback, /v1/chat/completions, /v1/models. Ctrl-C stops it.",
        flush=True,
    )
    received: list[int] = []  # appending is signal-safe; setting a threading.Event can deadlock
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda signum, _: received.append(signum))
    while not received:
        time.sleep(0.5)
    serve.delete(APP_NAME)
    serve.shutdown()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``tailormind serve`` has only the shared options (host and port: --set serve.host/serve.port)."""


def run(args: argparse.Namespace, config: TailorMindConfig) -> int:
    """``tailormind serve``: serve until interrupted."""
    serve_until_stopped(config)
    return 0


def _media_roots(roots: list[str]) -> list[str]:
    resolved = [Path(root).resolve() for root in roots]
    missing = [str(root) for root in resolved if not root.is_dir()]
    if missing:
        raise TailorMindError(f"serve.media_roots names folders that do not exist: {', '.join(missing)}.")
    return [str(root) for root in resolved]


def _token_sha256(variable: str | None) -> str | None:
    if variable is None:
        return None
    token = os.environ.get(variable)
    if not token:
        raise TailorMindError(
            f"serve.auth_token_env is {variable!r}, but that environment variable is empty: set it to the "
            "bearer token clients must send, or remove serve.auth_token_env to serve without a token."
        )
    return token_digest(token)
