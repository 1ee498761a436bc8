"""Profiles and posts for validated API requests: the batch job's ``models/`` code over deployment handles.

Requests that cannot be served raise ``HTTPException`` with the reason: 422 for a refused image, a bad
answer or a post the safety gate refused, 499 for a stopped request, 503 when a model gave no answer.
"""

from __future__ import annotations

import base64
import logging
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
from fastapi import HTTPException
from PIL import Image
from ray.serve.exceptions import RequestCancelledError

from models.config import ColdStartConfig, TailorMindConfig
from models.errors import TailorMindError
from models.feedback.store import new_post_id
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
from runtime.chat import RoleClients
from serve.feedback import FeedbackLog
from serve.handles import RemoteDiffusion, RemoteScorer
from serve.schemas import (
    Answer,
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


class GenerationService:
    """Profiles (or clarifying questions) and posts for API requests, over the LLM roles and model handles."""

    def __init__(
        self,
        config: TailorMindConfig,
        llm: RoleClients,
        *,
        images: RemoteDiffusion,
        videos: RemoteDiffusion | None,
        scorer: RemoteScorer,
        feedback_log: FeedbackLog | None,
    ):
        self.config = config
        self.llm = llm
        self.images = images
        self.videos = videos
        self.scorer = scorer
        self.feedback_log = feedback_log
        self.catalogue = load_catalogue(config.coldstart)
        served = config.serve
        self.media = MediaSources(
            folders=[Path(root) for root in served.media_roots],
            url_roots=served.url_roots,
            fetch_timeout_s=served.fetch_timeout_s,
        )

    def profile(self, body: ProfileRequest) -> ProfileResponse:
        """The preference profile of a history (with its answers); clarifying questions for a short one."""
        short = len(body.history) < self.config.coldstart.min_history
        if self.catalogue is not None and short and not body.answers:
            self._history_images(body.history)  # a bad image is a 422 here too
            return ProfileResponse(questions=[Question(**q) for q in self.catalogue.questions()])
        if not body.history and not body.answers:
            raise HTTPException(
                422,
                "send at least one history item: this server asks no clarifying questions "
                "(its config sets no coldstart.catalogue)",
            )
        extra = self._cold_start_cards(len(body.history), body.answers)
        return ProfileResponse(profile=self._profile(self._cards(body.history), extra))

    def generate(self, body: GenerateRequest, stop: threading.Event) -> GenerateResponse:
        """A post for a profile or a history after cohesion reflection (recorded when feedback is kept);
        no further model call is made once ``stop`` is set."""
        num_videos = self.config.generation.num_videos if body.num_videos is None else body.num_videos
        if num_videos and self.videos is None:
            raise HTTPException(
                422, "this server has no video model (serve.video is not configured): ask for num_videos 0"
            )
        references = self._reference_images(body.reference_image_uris)
        extra = self._cold_start_cards(len(body.history), body.answers)
        cards = self._cards(body.history)
        profile = body.profile if body.profile is not None else self._profile(cards, extra).text
        brief = UserBrief(REQUEST_KEY, profile, cards, cards + extra, reference_images=references)
        try:
            post = self._writer(body, num_videos, stop).write([brief])[0]
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
        post_id = new_post_id()
        response = _response(post_id, profile, post)
        if self.feedback_log is not None:
            self.feedback_log.record_post(post_id, body.user_id, profile, post)
        return response

    def _writer(self, body: GenerateRequest, num_videos: int, stop: threading.Event) -> PostWriter:
        """The post writer of a request: the config's generation settings, with the request's overrides."""
        generation = self.config.generation
        safety = generation.safety
        return PostWriter(
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


def load_catalogue(settings: ColdStartConfig) -> Catalogue | None:
    """The catalogue stage's clusters named by ``coldstart.catalogue`` (None when it names none)."""
    if settings.catalogue is None:
        return None
    if settings.catalogue_optional and not Path(settings.catalogue).exists():
        log.warning(
            "no catalogue at %s yet (run `make demo` to write one): serving without clarifying questions",
            settings.catalogue,
        )
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


def _response(post_id: str, profile: str, post: GeneratedPost) -> GenerateResponse:
    """The API's answer for a written post: its best version with PNG images and WebM clips, and scores."""
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
