"""The HTTP ingress: ray.serve.llm's OpenAI routes plus /healthz, /v1/profile, /v1/generate and /v1/feedback.

Requests are validated by the pydantic bodies in ``serve.schemas`` (422 with the reason), a bearer token
and a body-size limit are checked before any route runs, and the work itself is done by ``serve.generation``
(the same ``models/`` code as the batch job, with the models behind ``serve.handles``) and ``serve.feedback``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.exceptions import RayActorError
from ray.llm._internal.serve.core.configs.openai_api_models import OpenAIHTTPException
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from ray.serve.llm.ingress import OpenAiIngress

from models.config import TailorMindConfig
from models.feedback.store import FeedbackStore
from runtime.chat import RoleClients, ServeChat
from serve.feedback import FeedbackLog
from serve.generation import GenerationService, llm_roles
from serve.handles import RemoteDiffusion, RemoteScorer
from serve.schemas import (
    FeedbackRequest,
    FeedbackResponse,
    GenerateRequest,
    GenerateResponse,
    ProfileRequest,
    ProfileResponse,
)

log = logging.getLogger("tailormind.serve")


def token_digest(token: str) -> str:
    """SHA-256 hex digest of a bearer token (the ingress keeps only this)."""
    return hashlib.sha256(token.encode()).hexdigest()


class TailorMindIngress(OpenAiIngress):
    """OpenAI-compatible LLM routes and the TailorMind API over the LLM, diffusion and scorer deployments."""

    def __init__(
        self,
        llm_deployments: dict[str, DeploymentHandle],
        model_cards: dict[str, Any],
        *,
        images: DeploymentHandle,
        videos: DeploymentHandle | None,
        scorer: DeploymentHandle,
        settings: dict[str, Any],
        token_sha256: str | None,
        **openai_kwargs: Any,
    ):
        super().__init__(llm_deployments, model_cards, **openai_kwargs)
        self.config = TailorMindConfig.model_validate(settings)
        self.token_sha256 = token_sha256
        llm = self.config.llm
        roles = {name: getattr(llm, name) for name in llm_roles(self.config)}
        clients = RoleClients(
            {name: ServeChat(llm_deployments[role.served_model_id], role) for name, role in roles.items()},
            self.config.seed,
        )
        uri = self.config.feedback.uri
        self.feedback_log = FeedbackLog(FeedbackStore(uri)) if uri is not None else None
        self.generation = GenerationService(
            self.config,
            clients,
            images=RemoteDiffusion(images),
            videos=RemoteDiffusion(videos) if videos is not None else None,
            scorer=RemoteScorer(scorer),
            feedback_log=self.feedback_log,
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        """The replica's FastAPI app (built here so that its guard knows this deployment's settings)."""
        return http_app(self)

    async def healthz(self) -> JSONResponse:
        """200 when every deployment of this application is healthy, else 503 with their states."""
        app_name = serve.get_replica_context().app_name
        status = await asyncio.to_thread(serve.status)
        deployments = status.applications[app_name].deployments
        states = {name: str(d.status.value) for name, d in deployments.items()}
        ready = all(state == "HEALTHY" for state in states.values())
        return JSONResponse({"ready": ready, "deployments": states}, status_code=200 if ready else 503)

    async def profile(self, body: ProfileRequest) -> ProfileResponse:
        """The preference profile of a history (with its answers); clarifying questions for a short one."""
        return await asyncio.to_thread(self.generation.profile, body)

    async def generate(self, body: GenerateRequest) -> GenerateResponse:
        """A post with images (and clips) for a profile or a history, after cohesion reflection.

        When the client disconnects or the request times out, Serve cancels this coroutine; the worker
        thread then stops before its next step, so no further LLM, diffusion or scoring call is made.
        """
        stop = threading.Event()
        try:
            return await asyncio.to_thread(self.generation.generate, body, stop)
        except asyncio.CancelledError:
            stop.set()
            log.warning("/v1/generate cancelled (the client went away or the request timed out): stopping")
            raise

    async def feedback(self, body: FeedbackRequest) -> FeedbackResponse:
        """Persist what a user did with a post (once per event id); answered only once it is stored."""
        if self.feedback_log is None:
            raise HTTPException(404, "this server keeps no feedback: its config sets no feedback.uri")
        return await asyncio.to_thread(self.feedback_log.record_event, body)


Middleware = Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]


def request_guard(token_sha256: str | None, max_body_bytes: int) -> Middleware:
    """Middleware: bearer token (all routes but /healthz) and a declared, bounded body size."""

    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if token_sha256 and request.url.path != "/healthz":
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token_digest(token), token_sha256):
                return JSONResponse(
                    {"detail": "this API needs a valid bearer token: send 'Authorization: Bearer TOKEN'"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        if request.method in ("POST", "PUT", "PATCH"):
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return JSONResponse({"detail": "send the body with a Content-Length header"}, 411)
            if int(length) > max_body_bytes:
                return JSONResponse(
                    {"detail": f"the body has {length} bytes; this server accepts at most {max_body_bytes}"},
                    413,
                )
        return await call_next(request)

    return guard


def http_app(ingress: TailorMindIngress) -> FastAPI:
    """The FastAPI app of one ingress replica: guard, error bodies, OpenAI and TailorMind routes."""
    app = FastAPI(title="TailorMind", docs_url=None, redoc_url=None)
    app.middleware("http")(request_guard(ingress.token_sha256, int(ingress.config.serve.max_body_mb * 2**20)))
    retry_after_s = ingress.config.serve.ingress.retry_after_s

    @app.exception_handler(OpenAIHTTPException)
    async def openai_error(_: Request, exc: OpenAIHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code)

    @app.exception_handler(BackPressureError)
    @app.exception_handler(DeploymentUnavailableError)
    @app.exception_handler(RayActorError)
    async def model_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning(
            "request %s %s: a model deployment is unavailable: %s", request.method, request.url.path, exc
        )
        return JSONResponse(
            {"detail": f"a model deployment is busy or restarting ({type(exc).__name__}); retry later"},
            status_code=503,
            headers={"Retry-After": str(math.ceil(retry_after_s))},
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request %s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, 500)

    app.get("/healthz")(ingress.healthz)
    app.post("/v1/profile", response_model=ProfileResponse, response_model_exclude_none=True)(ingress.profile)
    app.post("/v1/generate", response_model=GenerateResponse)(ingress.generate)
    app.post("/v1/feedback", response_model=FeedbackResponse)(ingress.feedback)
    app.get("/v1/models")(ingress.models)
    app.get("/v1/models/{model:path}")(ingress.model_data)
    app.post("/v1/chat/completions")(ingress.chat)
    app.post("/v1/completions")(ingress.completions)
    return app
