"""Ray Serve LLM deployments (ray.serve.llm, vLLM inside) for the pipeline's LLM roles."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from ray import serve

from models.llm.config import LLMRoleConfig
from models.llm.engine import engine_kwargs, placement
from models.tiny import resolve_model_source

log = logging.getLogger("tailormind.llm")


def llm_server_config(role: LLMRoleConfig, deployment_name: str) -> Any:
    """The ``ray.serve.llm.LLMConfig`` that serves a role's model under its ``served_model_id``."""
    from ray.serve.llm import LLMConfig

    extra: dict[str, Any] = placement(role)
    if role.accelerator_type is None:
        extra["accelerator_config"] = {"kind": "cpu"}
    return LLMConfig(
        model_loading_config={
            "model_id": role.served_model_id,
            "model_source": resolve_model_source(role.model_source),
        },
        # every answer's usage then counts the prompt tokens vLLM's prefix cache served
        engine_kwargs=engine_kwargs(role) | {"enable_prompt_tokens_details": True},
        deployment_config={"name": deployment_name, "num_replicas": role.num_engines},
        log_engine_metrics=False,
        server_cls="runtime.scoring_server.ScoringLLMServer",  # scores continuations too (likelihood ranker)
        **extra,
    )


def engine_processor_config(role: LLMRoleConfig, **stages: Any) -> Any:
    """``ray.data.llm``'s vLLM processor config for a role's engine (rows that fail come out with their
    error), with the given stage settings."""
    from ray.data.llm import vLLMEngineProcessorConfig

    return vLLMEngineProcessorConfig(
        model_source=resolve_model_source(role.model_source),
        engine_kwargs=engine_kwargs(role),
        batch_size=role.batch_size,
        concurrency=role.num_engines,
        log_engine_metrics=False,
        should_continue_on_error=True,
        **placement(role),
        **stages,
    )


# Role settings that shape requests, not the engine: roles differing only in these share a deployment.
_NOT_ENGINE = (
    "temperature",
    "top_p",
    "repetition_penalty",
    "max_tokens",
    "max_retries",
    "batch_size",
    "batches_in_flight",
    "backend",
    "scorer",
)


def deployment_names(role: LLMRoleConfig) -> tuple[str, str]:
    """(app, deployment) names of a role's engine; roles with the same engine settings share one."""
    engine = {k: v for k, v in role.model_dump().items() if k not in _NOT_ENGINE}
    digest = hashlib.sha256(json.dumps(engine, sort_keys=True).encode()).hexdigest()[:8]
    return f"tailormind-llm-{digest}", f"llm-{digest}"


def ensure_llm_deployment(role: LLMRoleConfig) -> tuple[str, str]:
    """Deploy the role's LLM on Serve unless it already runs; returns (app name, deployment name)."""
    ensure_llm_deployments([role])
    return deployment_names(role)


def ensure_llm_deployments(roles: Iterable[LLMRoleConfig]) -> None:
    """Deploy the engines of these roles that do not run yet, all at once (their starts overlap), and wait
    until every one of them runs (one that another job is deploying too; a failed one raises)."""
    from ray.serve.llm import build_llm_deployment

    present = set(serve.status().applications)
    targets: dict[str, Any] = {}
    names = []
    for role in roles:
        app_name, deployment_name = deployment_names(role)
        names.append(app_name)
        if app_name in present or app_name in targets:
            continue
        log.info("deploying %s on Ray Serve as %s", role.model_source, app_name)
        app = build_llm_deployment(
            llm_server_config(role, deployment_name), override_serve_options={"name": deployment_name}
        )
        targets[app_name] = serve.RunTarget(target=app, name=app_name, route_prefix=None)
    if targets:
        serve.run_many(list(targets.values()))
    wait_until_running(set(names))


def wait_until_running(app_names: set[str], timeout_s: float = 1800.0, poll_s: float = 0.5) -> None:
    """Block until these Serve applications run (an unhealthy one may recover); a failed deployment, or
    one still not running after ``timeout_s`` (its replicas cannot be placed), raises with Serve's
    message."""
    from ray.serve.schema import ApplicationStatus

    deadline = time.monotonic() + timeout_s
    while True:
        statuses = serve.status().applications
        pending = []
        for name in app_names:
            status = statuses.get(name)
            if status is None or status.status == ApplicationStatus.DEPLOY_FAILED:
                message = f"{status.status}: {status.message}" if status is not None else "it is not deployed"
                raise RuntimeError(f"the LLM deployment {name} did not start: {message}")
            if status.status != ApplicationStatus.RUNNING:
                pending.append(f"{name} ({status.status}: {status.message or 'no message'})")
        if not pending:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"LLM deployments still not running after {timeout_s:.0f} s: {', '.join(pending)}"
            )
        time.sleep(poll_s)
