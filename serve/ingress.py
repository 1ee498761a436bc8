"""The HTTP ingress: ray.serve.llm's OpenAI routes plus /healthz, /v1/profile and /v1/generate.

Requests are validated by the pydantic bodies in ``serve.schemas`` (422 with the reason), a bearer token
and a body-size limit are checked before any route runs, and the work itself is the same ``models/`` code
as the batch job, with the models behind deployment handles (``serve.handles``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import math
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from PIL import Image
from ray import serve
from ray.exceptions import RayActorError
from ray.llm._internal.serve.core.configs.openai_api_models import OpenAIHTTPException
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, RequestCancelledError
from ray.serve.handle import DeploymentHandle
from ray.serve.llm.ingress import OpenAiIngress

from models.config import ColdStartConfig, TailorMindConfig
from models.errors import TailorMindError
from models.feedback.store import FeedbackStore, new_post_id, profile_version
from models.generation.safety import JUDGE_ROLE, SafetyGate
from models.generation.writer import GeneratedPost, GenerationStopped, PostVersion, PostWriter, UserBrief
from models.llm.prompts import CAPTION_IMAGE, profile_text
from models.media import (
    MediaError,
    MediaSources,
    png_data_url,
    request_image,
    request_image_data_url,
    webm_bytes,
)
from models.profiling.catalogue import AnswerError, Catalogue
from models.profiling.evidence import item_card
from models.profiling.initial import profile_request
from runtime.chat import RoleClients, ServeChat
from serve.handles import RemoteDiffusion, RemoteScorer
from serve.schemas import (
    Answer,
    FeedbackRequest,
    FeedbackResponse,
    GenerateRequest,
    GenerateResponse,
    HistoryItem,
    Post,
    PostImage,
    PostScores,
    PostVideo,
    Profile,
    ProfileRequest,
    ProfileResponse,
    Question,
    SafetyFlagged,
    SafetyReport,
)

log = logging.getLogger("tailormind.serve")
REQUEST_KEY = "request"


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
        self.images = RemoteDiffusion(images)
        self.videos = RemoteDiffusion(videos) if videos is not None else None
        self.scorer = RemoteScorer(scorer)
        llm = self.config.llm
        roles = {name: getattr(llm, name) for name in llm_roles(self.config)}
        self.llm = RoleClients(
            {name: ServeChat(llm_deployments[role.served_model_id], role) for name, role in roles.items()},
            self.config.seed,
        )
        uri = self.config.feedback.uri
        self.store = FeedbackStore(uri) if uri is not None else None
        self.catalogue = load_catalogue(self.config.coldstart)
        served = self.config.serve
        self.media = MediaSources(
            folders=[Path(root) for root in served.media_roots],
            url_roots=served.url_roots,
            fetch_timeout_s=served.fetch_timeout_s,
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
        short = len(body.history) < self.config.coldstart.min_history
        if self.catalogue is not None and short and not body.answers:
            await asyncio.to_thread(self._history_images, body.history)  # a bad image is a 422 here too
            return ProfileResponse(questions=[Question(**q) for q in self.catalogue.questions()])
        if not body.history and not body.answers:
            raise HTTPException(
                422,
                "send at least one history item: this server asks no clarifying questions "
                "(its config sets no coldstart.catalogue)",
            )
        extra = self._cold_start_cards(len(body.history), body.answers)
        cards = await asyncio.to_thread(self._cards, body.history)
        return ProfileResponse(profile=await asyncio.to_thread(self._profile, cards, extra))

    async def generate(self, body: GenerateRequest) -> GenerateResponse:
        """A post with images (and clips) for a profile or a history, after cohesion reflection.

        When the client disconnects or the request times out, Serve cancels this coroutine; the worker
        thread then stops before its next step, so no further LLM, diffusion or scoring call is made.
        """
        stop = threading.Event()
        try:
            return await asyncio.to_thread(self._generate, body, stop)
        except asyncio.CancelledError:
            stop.set()
            log.warning("/v1/generate cancelled (the client went away or the request timed out): stopping")
            raise

    async def feedback(self, body: FeedbackRequest) -> FeedbackResponse:
        """Persist what a user did with a post (once per event id); answered only once it is stored."""
        return await asyncio.to_thread(self._feedback, body)

    def _feedback(self, body: FeedbackRequest) -> FeedbackResponse:
        if self.store is None:
            raise HTTPException(404, "this server keeps no feedback: its config sets no feedback.uri")
        post = self.store.find_post(body.post_id)
        if post is None:
            raise HTTPException(404, f"no post with post_id {body.post_id} was generated by this service")
        if post["user_id"] != body.user_id:
            raise HTTPException(422, f"post {body.post_id} was not generated for user_id {body.user_id!r}")
        outcome = self.store.record_event(body.model_dump(), post)
        if outcome == "conflict":
            raise HTTPException(
                409, f"event_id {body.event_id!r} was already used for a different event: send a new event_id"
            )
        return FeedbackResponse(event_id=body.event_id, stored=outcome == "stored")

    def _history_images(self, history: list[HistoryItem]) -> list[tuple[int, str]]:
        """(item index, data URL) of every history image, read only from allowed places (else 422)."""
        images: list[tuple[int, str]] = []
        for index, item in enumerate(history):
            for uri_index, uri in enumerate(item.image_uris):
                try:
                    images.append((index, request_image_data_url(uri, self.media)))
                except MediaError as exc:
                    raise HTTPException(422, f"history[{index}].image_uris[{uri_index}]: {exc}") from None
        return images

    def _cards(self, history: list[HistoryItem]) -> list[str]:
        """Item cards of a history; images are read (only from allowed places) and described by the VLM."""
        images = self._history_images(history)
        descriptions: dict[int, list[str]] = {}
        if images:
            requests = [
                {
                    "row_key": str(n),
                    "messages": CAPTION_IMAGE.messages({"title": history[index].title}, [url]),
                    "schema": CAPTION_IMAGE.schema,
                }
                for n, (index, url) in enumerate(images)
            ]
            answers = self.llm(requests, "captioner")
            for n, (index, _) in enumerate(images):
                if answers[str(n)].value:
                    descriptions.setdefault(index, []).append(answers[str(n)].value["description"])
        return [
            item_card(
                {"title": item.title, "text": item.text, "tags": item.tags},
                {"image_description": " ".join(descriptions.get(index, []))},
            )
            for index, item in enumerate(history)
        ]

    def _reference_images(self, uris: list[str]) -> list[Image.Image]:
        """The request's reference images, read only from allowed places (422 naming the one refused)."""
        size = self.config.generation.image_size
        images = []
        for index, uri in enumerate(uris):
            try:
                images.append(request_image(uri, self.media, max_side=size))
            except MediaError as exc:
                raise HTTPException(422, f"reference_image_uris[{index}]: {exc}") from None
        return images

    def _cold_start_cards(self, history_items: int, answers: list[Answer]) -> list[str]:
        """Cards of the answered clusters, else the curated default for a short history (422: bad answers)."""
        if self.catalogue is None:
            if answers:
                raise HTTPException(
                    422, "this server asks no clarifying questions (no coldstart.catalogue): send no answers"
                )
            return []
        try:
            return self.catalogue.evidence(history_items, [(a.question_id, a.choice) for a in answers])
        except AnswerError as error:
            raise HTTPException(422, f"answers: {error}") from None

    def _profile(self, cards: list[str], extra_cards: list[str]) -> Profile:
        """The profile of a history's cards and, in the CF items' place, ``extra_cards`` (cold start)."""
        budget = self.config.profiling.evidence_chars
        request = profile_request(REQUEST_KEY, cards, extra_cards, budget)
        answer = self.llm([request], "profiler")[REQUEST_KEY]
        if answer.value is None:
            raise HTTPException(
                503, f"the profiler gave no valid profile in {answer.attempts} attempts: {answer.error}"
            )
        preferences = answer.value["preferences"]
        return Profile(preferences=preferences, text=profile_text(preferences))

    def _generate(self, body: GenerateRequest, stop: threading.Event) -> GenerateResponse:
        generation = self.config.generation
        num_videos = generation.num_videos if body.num_videos is None else body.num_videos
        if num_videos and self.videos is None:
            raise HTTPException(
                422, "this server has no video model (serve.video is not configured): ask for num_videos 0"
            )
        references = self._reference_images(body.reference_image_uris)
        extra = self._cold_start_cards(len(body.history), body.answers)
        cards = self._cards(body.history)
        profile = body.profile if body.profile is not None else self._profile(cards, extra).text
        safety = generation.safety
        writer = PostWriter(
            complete=self.llm,
            images=self.images,
            scorer=self.scorer,
            embedder=self.scorer,
            num_images=generation.num_images if body.num_images is None else body.num_images,
            reflection_rounds=(
                generation.reflection_rounds if body.reflection_rounds is None else body.reflection_rounds
            ),
            seed=body.seed,
            videos=self.videos,
            num_videos=num_videos,
            video_score_frames=generation.video.score_frames,
            safety=SafetyGate.from_config(safety, self.llm, self.scorer, generation.video.score_frames),
            safety_rewrites=safety.rewrites,
            stopped=stop.is_set,
        )
        brief = UserBrief(REQUEST_KEY, profile, cards, cards + extra, reference_images=references)
        try:
            post = writer.write([brief])[0]
        except (GenerationStopped, RequestCancelledError) as error:
            # Serve also cancels this request's calls in flight when its client goes: a step can end so
            where = error if isinstance(error, GenerationStopped) else "stopped in a step (calls cancelled)"
            log.warning("/v1/generate %s: its client is gone", where)
            raise HTTPException(499, f"generation {where}") from None
        if post.refusal is not None:
            log.warning("a post was refused by the safety gate: %s", post.refusal)
            raise HTTPException(422, f"no post passed the safety gate: {post.refusal}")
        if post.best < 0:
            raise HTTPException(503, "; ".join(post.errors))
        best = post.versions[post.best]
        images = [
            PostImage(prompt=prompt, png_base64=png_data_url(image, max(image.size)).partition(",")[2])
            for prompt, image in zip(best.image_prompts, best.images, strict=True)
        ]
        videos = [
            PostVideo(
                prompt=prompt,
                webm_base64=base64.b64encode(webm_bytes(clip)).decode("ascii"),
                frames=len(clip.frames),
                fps=clip.fps,
            )
            for prompt, clip in zip(best.video_prompts, best.videos, strict=True)
        ]
        post_id = new_post_id()
        if self.store is not None:
            shown = best.to_dict()
            self.store.record_post(
                {
                    "post_id": post_id,
                    "user_id": body.user_id or "",
                    "profile_version": profile_version(profile),
                    "profile": profile,
                    "idea": post.idea,
                    **{k: shown[k] for k in _RECORDED},
                    "scores": json.dumps(shown["scores"]),
                }
            )
        return GenerateResponse(
            post_id=post_id,
            post=Post(title=best.title, body=best.body, tags=best.tags, images=images, videos=videos),
            scores=_scores(best),
            versions=len(post.versions),
            version_scores=[_scores(v) for v in post.versions],
            profile=profile,
            styles=post.styles,
            idea=post.idea,
            exemplars=post.exemplars,
            safety=_safety_report(post),
        )


_RECORDED = ("title", "body", "tags", "image_prompts", "video_prompts")


def load_catalogue(settings: ColdStartConfig) -> Catalogue | None:
    """The catalogue stage's clusters named by ``coldstart.catalogue`` (None when it names none)."""
    if settings.catalogue is None:
        return None
    try:
        return Catalogue.read(settings.catalogue, settings)
    except (OSError, ValueError, pa.ArrowException) as error:
        raise TailorMindError(
            f"coldstart.catalogue {settings.catalogue} is not a catalogue stage's clusters.parquet "
            f"({error}); run the pipeline's catalogue stage and point coldstart.catalogue at "
            "RUN/catalogue/clusters.parquet"
        ) from None


def llm_roles(config: TailorMindConfig) -> tuple[str, ...]:
    """The LLM roles the API uses: captions, profiles, posts, and the safety gate's judge when it is on."""
    judge = (JUDGE_ROLE,) if config.generation.safety.policy_check else ()
    return ("captioner", "profiler", "writer", *judge)


def _safety_report(post: GeneratedPost) -> SafetyReport:
    best = post.versions[post.best].safety
    flagged = [
        SafetyFlagged(version=index, check=flag.check, reason=flag.reason)
        for index, version in enumerate(post.versions)
        if version.safety is not None
        for flag in version.safety.flags
    ]
    return SafetyReport(checked=best.checked if best is not None else [], flagged=flagged)


def _scores(version: PostVersion) -> PostScores:
    clip = float(np.mean(version.clip)) if version.clip else 0.0
    return PostScores(clip=clip, relevance=version.relevance, combined=version.score)


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
