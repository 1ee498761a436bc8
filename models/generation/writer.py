"""Personalised posts (paper section 3.3): ideation, RAG exemplars, writing, images and video clips,
cohesion reflection.

Every step runs for a batch of users at once: one LLM call list per step, one diffusion batch per medium
per round.
The LLM is reached through ``complete(requests, role)`` so the batch job (Ray Data passes) and the Serve
app (deployment handles) drive the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image

from models.degenerate import cleaned_tags, problems, repaired
from models.embedding import Embedder
from models.generation.ideas import IDEA_TEMPLATES
from models.generation.safety import SafetyGate, SafetyVerdict
from models.llm.prompts import IDEA, post_template, style_template
from models.media import VideoClip
from models.scoring.clip_score import CLIP_SCORE_WEIGHT

Complete = Callable[[list[dict[str, Any]], str], dict[str, Any]]
WRITER_ROLE = "writer"  # the LLM role of every writing step: styles, idea, drafts, revisions
EXEMPLARS = 3


class ImageModel(Protocol):
    """Text to image, or image to image from references (``ImageGenerator`` in process, a Serve deployment
    handle behind an adapter)."""

    def generate(
        self, prompts: list[str], seeds: list[int], references: list[Image.Image | None] | None = None
    ) -> list[Image.Image]:
        """One image per (prompt, seed), drawn from its reference where one is given."""
        ...


class VideoModel(Protocol):
    """Text to video (``VideoGenerator`` in process, a Serve deployment handle behind an adapter)."""

    def generate(self, prompts: list[str], seeds: list[int]) -> list[VideoClip]:
        """One clip per (prompt, seed)."""
        ...


class ImageTextScorer(Protocol):
    """CLIPScore of (image, text) pairs."""

    def score(self, images: list[Image.Image], texts: list[str]) -> np.ndarray:
        """One score in [0, 2.5] per pair."""
        ...


@dataclass
class UserBrief:
    """What generation needs about one user: the profile text and the item cards of their evidence."""

    user_id: str
    profile: str
    history_cards: list[str]
    exemplar_cards: list[str]
    use_exemplars: bool = True  # False: no RAG style references (an ablation)
    reflection_rounds: int | None = None  # None: the writer's setting
    reference_images: list[Image.Image] = field(default_factory=list)  # image i is drawn from reference i % n


@dataclass
class PostVersion:
    """One version of a post with its images, video clips and cohesion scores."""

    title: str
    body: str
    tags: list[str]
    image_prompts: list[str]
    images: list[Image.Image] = field(default_factory=list, repr=False)
    clip: list[float] = field(default_factory=list)  # one CLIPScore per image, then one per video
    relevance: float = 0.0
    video_prompts: list[str] = field(default_factory=list)
    videos: list[VideoClip] = field(default_factory=list, repr=False)
    safety: SafetyVerdict | None = None  # None: no safety gate ran
    # what is still degenerate after repair, and "off_topic" when no closer to its reader's history than to
    # the other readers' (counted)
    degenerate: list[str] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        """False only when the safety gate flagged this version."""
        return self.safety is None or self.safety.safe

    def media(self, kind: str) -> tuple[list[str], list[Any]]:
        """(prompts, rendered media) of one kind, ``"image"`` or ``"video"``."""
        return (self.image_prompts, self.images) if kind == "image" else (self.video_prompts, self.videos)

    @property
    def score(self) -> float:
        """Combined cohesion: mean CLIPScore scaled to [0, 1] plus history relevance."""
        clip = float(np.mean(self.clip)) / CLIP_SCORE_WEIGHT if self.clip else 0.0
        return clip + self.relevance

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields and scores (images are written separately); a flagged version's content is
        withheld, only its safety verdict is kept."""
        scores = {"clip": self.clip, "relevance": self.relevance, "combined": self.score}
        safety = {"safety": self.safety.to_dict()} if self.safety is not None else {}
        if not self.safe:
            return {"withheld": True, "scores": scores, **safety}
        return {
            "title": self.title,
            "body": self.body,
            "tags": self.tags,
            "image_prompts": self.image_prompts,
            "video_prompts": self.video_prompts,
            "scores": scores,
            "degenerate": self.degenerate,
            **safety,
        }


@dataclass
class GeneratedPost:
    """Every version of one user's post; ``best`` indexes the one with the highest combined score."""

    user_id: str
    styles: list[str]
    idea: str
    exemplars: list[str]
    versions: list[PostVersion]
    errors: list[str] = field(default_factory=list)

    @property
    def best(self) -> int:
        """Index of the best-scoring version the safety gate passed (-1 when there is none)."""
        safe = [i for i, v in enumerate(self.versions) if v.safe]
        return max(safe, key=lambda i: self.versions[i].score) if safe else -1

    @property
    def refusal(self) -> str | None:
        """Why the post is refused when every version was flagged by the safety gate, else None."""
        if not self.versions or self.best >= 0:
            return None
        flags = self.versions[-1].safety.flags if self.versions[-1].safety is not None else []
        reasons = "; ".join(f"{flag.check}: {flag.reason}" for flag in flags)
        return f"every version ({len(self.versions)}) was flagged by the safety gate; the last: {reasons}"

    @property
    def flags(self) -> int:
        """Safety flags raised over all versions."""
        return sum(len(v.safety.flags) for v in self.versions if v.safety is not None)


class GenerationStopped(Exception):
    """The caller no longer wants the posts (its client went away or its time ran out)."""


def _never() -> bool:
    return False


@dataclass
class PostWriter:
    """Runs the generation steps over a batch of users with the given models."""

    complete: Complete
    images: ImageModel
    scorer: ImageTextScorer
    embedder: Embedder
    num_images: int = 1
    reflection_rounds: int = 3
    seed: int = 0
    videos: VideoModel | None = None
    num_videos: int = 0
    video_score_frames: int = 4  # evenly spaced frames of a clip that CLIPScore rates
    safety: SafetyGate | None = None  # None: posts are not checked
    safety_rewrites: int = 2  # revisions a flagged post gets before it is refused
    stopped: Callable[[], bool] = _never  # asked before every step: True ends the work (GenerationStopped)

    def __post_init__(self) -> None:
        if self.num_videos and self.videos is None:
            raise ValueError(f"num_videos is {self.num_videos}, but the writer has no video model")

    def write(self, briefs: list[UserBrief]) -> list[GeneratedPost]:
        """Ideate, write, render, score and reflect for every user; returns each user's versions."""
        fallbacks: dict[str, list[str]] = {b.user_id: [] for b in briefs}
        self._go_on("ideation")
        styles = self._styles(briefs, fallbacks)
        self._go_on("the idea")
        ideas = self._ideas(briefs, styles, fallbacks)
        exemplars = self._exemplars(briefs, ideas)
        posts = {
            b.user_id: GeneratedPost(
                b.user_id, styles[b.user_id], ideas[b.user_id], exemplars[b.user_id], [], fallbacks[b.user_id]
            )
            for b in briefs
        }
        self._go_on("the first draft")
        drafts = self._drafts(briefs, posts, feedback={})
        history = self._history_vectors(briefs)
        active = {user_id for user_id, draft in drafts.items() if draft is not None}
        reflections = {
            b.user_id: self.reflection_rounds if b.reflection_rounds is None else b.reflection_rounds
            for b in briefs
        }
        rewrites = {b.user_id: self.safety_rewrites for b in briefs}
        previous: dict[str, PostVersion] = {}
        round_index = 0
        while active:
            current: dict[str, PostVersion] = {u: d for u in active if (d := drafts.get(u)) is not None}
            self._go_on(f"rendering round {round_index}")
            self._render(current, previous, round_index, {b.user_id: b.reference_images for b in briefs})
            self._go_on(f"scoring round {round_index}")
            self._score(current, history)
            if self.safety is not None:
                for user_id, verdict in self.safety.check(current).items():
                    current[user_id].safety = verdict
            active = set()
            for user_id, version in current.items():
                post = posts[user_id]
                best_before = post.versions[post.best].score if post.best >= 0 else -np.inf
                post.versions.append(version)
                if not version.safe and rewrites[user_id] > 0:  # rewrite (and re-render) what was flagged
                    rewrites[user_id] -= 1
                    active.add(user_id)
                elif version.safe and version.score > best_before and reflections[user_id] > 0:
                    reflections[user_id] -= 1
                    active.add(user_id)
            if not active:
                break
            previous = {u: current[u] for u in active}
            feedback = {u: _feedback(current[u]) for u in active}
            self._go_on(f"revision {round_index + 1}")
            drafts = self._drafts([b for b in briefs if b.user_id in active], posts, feedback)
            round_index += 1
        return [posts[b.user_id] for b in briefs]

    def _go_on(self, step: str) -> None:
        """Raise ``GenerationStopped`` when the caller asked to stop, before ``step`` starts."""
        if self.stopped():
            raise GenerationStopped(f"stopped before {step}")

    def _styles(self, briefs: list[UserBrief], fallbacks: dict[str, list[str]]) -> dict[str, list[str]]:
        """Step 1: the idea templates that fit each profile (the first template where the LLM failed)."""
        names = list(IDEA_TEMPLATES)
        template = style_template(names)
        catalogue = "\n".join(f"- {name}: {text}" for name, text in IDEA_TEMPLATES.items())
        requests = [_request(b.user_id, template, profile=b.profile, templates=catalogue) for b in briefs]
        answers = self.complete(requests, WRITER_ROLE)
        chosen = {}
        for b in briefs:
            chosen[b.user_id] = _value(answers, b.user_id, "styles") or _fallback(
                answers, b.user_id, "style", names[:1], fallbacks
            )
        return chosen

    def _ideas(
        self, briefs: list[UserBrief], styles: dict[str, list[str]], fallbacks: dict[str, list[str]]
    ) -> dict[str, str]:
        """Step 2: one idea per user in the chosen formats, asked again once when its text loops; the first
        format and what it is where the LLM failed or looped again."""
        requests = [
            _request(b.user_id, IDEA, profile=b.profile, styles=", ".join(styles[b.user_id])) for b in briefs
        ]
        answers = self.complete(requests, WRITER_ROLE)
        self._retry_degenerate(requests, answers, _idea_problems)
        ideas = {}
        for b in briefs:
            idea, style = (_value(answers, b.user_id, "idea") or "").strip(), styles[b.user_id][0]
            looped = _idea_problems({"idea": idea}) if idea else []
            default = f"{style}: {IDEA_TEMPLATES[style]}" if style in IDEA_TEMPLATES else style
            reason = f"degenerate text, {', '.join(looped)}: {idea!r}" if looped else None
            ideas[b.user_id] = (
                idea
                if idea and not looped
                else _fallback(answers, b.user_id, "idea", default, fallbacks, reason)
            )
        return ideas

    def _exemplars(self, briefs: list[UserBrief], ideas: dict[str, str]) -> dict[str, list[str]]:
        """Eq. 15: the evidence items closest (cosine, MiniLM) to the profile and idea, per user."""
        queries = self.embedder.embed([f"{b.profile}\n{ideas[b.user_id]}" for b in briefs])
        chosen: dict[str, list[str]] = {}
        for query, brief in zip(queries, briefs, strict=True):
            if not brief.use_exemplars or not brief.exemplar_cards:
                chosen[brief.user_id] = []
                continue
            vectors = self.embedder.embed(brief.exemplar_cards)
            best = np.argsort(-(vectors @ query), kind="stable")[:EXEMPLARS]
            chosen[brief.user_id] = [brief.exemplar_cards[i] for i in best]
        return chosen

    def _drafts(
        self, briefs: list[UserBrief], posts: dict[str, GeneratedPost], feedback: dict[str, str]
    ) -> dict[str, PostVersion | None]:
        template = post_template(self.num_images, self.num_videos)
        requests = []
        for b in briefs:
            post = posts[b.user_id]
            fields = {
                "profile": b.profile,
                "idea": post.idea,
                "exemplars": "\n".join(f"- {card}" for card in post.exemplars) or "(none)",
                "feedback": feedback.get(b.user_id, ""),
            }
            requests.append(_request(b.user_id, template, **fields))
        answers = self.complete(requests, WRITER_ROLE)
        self._retry_degenerate(requests, answers, _post_problems)
        drafts: dict[str, PostVersion | None] = {}
        for b in briefs:
            answer = answers.get(b.user_id)
            value = answer.value if answer is not None else None
            if not value:
                step = f"revision {len(posts[b.user_id].versions)}" if feedback else "the first draft"
                reason = f" after {answer.attempts} attempts: {answer.error}" if answer is not None else ""
                posts[b.user_id].errors.append(f"the writer returned no valid post for {step}{reason}")
                drafts[b.user_id] = None
                continue
            title, body = repaired(value["title"]), repaired(value["body"])
            drafts[b.user_id] = PostVersion(
                title,
                body,
                cleaned_tags(value["tags"]),
                value["image_prompts"],
                video_prompts=value.get("video_prompts", []),
                degenerate=problems(title, body),
            )
        return drafts

    def _retry_degenerate(
        self,
        requests: list[dict[str, Any]],
        answers: dict[str, Any],
        problems_of: Callable[[dict[str, Any]], list[str]],
    ) -> None:
        """Ask once more for each answer whose text is degenerate (``problems_of`` an answer's value, from
        ``models.degenerate``); keep the better one."""

        def count(value: Any) -> int:
            return len(problems_of(value)) if value else 10**6

        again = [r for r in requests if 0 < count(_value_of(answers, r["row_key"])) < 10**6]
        if not again:
            return
        for key, answer in self.complete(again, WRITER_ROLE).items():
            if count(answer.value) < count(_value_of(answers, key)):
                answers[key] = answer

    def _render(
        self,
        current: dict[str, PostVersion],
        previous: dict[str, PostVersion],
        round_index: int,
        references: dict[str, list[Image.Image]],
    ) -> None:
        """Render every new image prompt in one diffusion batch, then every new video prompt in another."""
        self._render_kind("image", self.images.generate, current, previous, round_index, references)
        if self.videos is not None:
            videos = self.videos
            self._render_kind(
                "video",
                lambda prompts, seeds, _: videos.generate(prompts, seeds),
                current,
                previous,
                round_index,
                {},
            )

    def _render_kind(
        self,
        kind: str,
        render: Callable[[list[str], list[int], list[Image.Image | None]], list[Any]],
        current: dict[str, PostVersion],
        previous: dict[str, PostVersion],
        round_index: int,
        references: dict[str, list[Image.Image]],
    ) -> None:
        """Render the changed prompts of one kind in one batch (images from the user's references where
        given); unchanged prompts reuse their media."""
        todo: list[tuple[str, int, str]] = []
        for user_id, version in current.items():
            prompts, media = version.media(kind)
            before = previous.get(user_id)
            before_prompts, before_media = before.media(kind) if before is not None else ([], [])
            flagged = before.safety.flagged_media.get(kind, []) if before and before.safety else []
            for index, prompt in enumerate(prompts):
                unchanged = index < len(before_prompts) and before_prompts[index] == prompt
                if unchanged and index not in flagged:
                    media.append(before_media[index])
                else:
                    media.append(None)
                    todo.append((user_id, index, prompt))
        if not todo:
            return
        seeds = [_media_seed(self.seed, round_index, index) for _, index, _ in todo]
        prompts = [prompt for _, _, prompt in todo]
        guides = [_reference(references.get(user_id, []), index) for user_id, index, _ in todo]
        rendered = render(prompts, seeds, guides)
        for (user_id, index, _), item in zip(todo, rendered, strict=True):
            _, media = current[user_id].media(kind)
            media[index] = item

    def _score(self, current: dict[str, PostVersion], history: dict[str, np.ndarray | None]) -> None:
        """CLIPScore of each image, and of each clip's sampled frames, against its prompt and the title.

        One scorer call for every frame of the round; a clip's score is the mean over its frames.
        """
        visuals: list[tuple[str, list[Image.Image], str]] = []
        for user_id, version in current.items():
            for image, prompt in zip(version.images, version.image_prompts, strict=True):
                visuals.append((user_id, [image], f"{version.title}. {prompt}"))
            for clip, prompt in zip(version.videos, version.video_prompts, strict=True):
                visuals.append((user_id, clip.sample(self.video_score_frames), f"{version.title}. {prompt}"))
        if visuals:
            frames = [frame for _, group, _ in visuals for frame in group]
            texts = [text for _, group, text in visuals for _ in group]
            scores = split_groups(self.scorer.score(frames, texts), [group for _, group, _ in visuals])
            for (user_id, _, _), group_scores in zip(visuals, scores, strict=True):
                current[user_id].clip.append(float(np.mean(group_scores)))
        means = {u: mean for u, mean in history.items() if mean is not None}
        users = [u for u in current if u in means]  # a reader without history keeps relevance 0
        if not users:
            return
        posts = self.embedder.embed([f"{current[u].title}\n{current[u].body}" for u in users])
        column = {u: i for i, u in enumerate(means)}
        similarity = posts @ np.stack(list(means.values())).T  # [posts, readers]
        own = similarity[np.arange(len(users)), [column[u] for u in users]]
        for user_id, relevance, is_off_topic in zip(users, own, off_topic(similarity, own), strict=True):
            current[user_id].relevance = float(relevance)
            if is_off_topic:
                current[user_id].degenerate.append("off_topic")

    def _history_vectors(self, briefs: list[UserBrief]) -> dict[str, np.ndarray | None]:
        vectors: dict[str, np.ndarray | None] = {}
        for b in briefs:
            if not b.history_cards:
                vectors[b.user_id] = None
                continue
            mean = self.embedder.embed(b.history_cards).mean(axis=0)
            vectors[b.user_id] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        return vectors


def off_topic(similarity: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Per post: no closer to its reader's history (``own``) than on average to the other readers' (the
    rest of its row of ``similarity``, posts x readers); never with fewer than two readers to compare."""
    readers = similarity.shape[1]
    if readers < 2:
        return np.zeros(len(own), dtype=bool)
    others = (similarity.sum(axis=1) - own) / (readers - 1)
    return own <= others


def split_groups(values: np.ndarray, groups: list[list[Any]]) -> list[np.ndarray]:
    """``values`` computed for the flattened ``groups``, split back into one array per group."""
    return np.split(values, np.cumsum([len(group) for group in groups])[:-1])


def _media_seed(seed: int, round_index: int, slot: int) -> int:
    """The diffusion seed of one image or video slot in one round: per user, independent of the batch."""
    return seed + 1000 * round_index + slot


def _reference(images: list[Image.Image], slot: int) -> Image.Image | None:
    """The reference image slot ``slot`` is drawn from (they take turns), or None without references."""
    return images[slot % len(images)] if images else None


def _request(key: str, template: Any, **fields: Any) -> dict[str, Any]:
    return {"row_key": key, "messages": template.messages(fields), "schema": template.schema}


def _value_of(answers: dict[str, Any], key: str) -> Any:
    answer = answers.get(key)
    return answer.value if answer is not None else None


def _value(answers: dict[str, Any], key: str, name: str) -> Any:
    answer = answers.get(key)
    return answer.value[name] if answer is not None and answer.value else None


def _post_problems(value: dict[str, Any]) -> list[str]:
    """What is degenerate in a drafted post's title and body."""
    return problems(value["title"], value["body"])


def _idea_problems(value: dict[str, Any]) -> list[str]:
    """What is degenerate in an idea's text (looping, not length: an idea may be short)."""
    return problems("", value["idea"], min_body_chars=0)


def _fallback(
    answers: dict[str, Any],
    key: str,
    step: str,
    default: Any,
    fallbacks: dict[str, list[str]],
    reason: str | None = None,
) -> Any:
    """``default`` in place of a failed step's answer, with the failure (or ``reason``) recorded in the
    post's errors."""
    answer = answers.get(key)
    if reason is None:
        reason = f"{answer.error} after {answer.attempts} attempts" if answer is not None else "no answer"
    fallbacks[key].append(f"the {step} step failed ({reason}); used {default!r} instead")
    return default


def _feedback(version: PostVersion) -> str:
    if not version.safe:
        assert version.safety is not None
        reasons = "; ".join(flag.reason for flag in version.safety.flags)
        return (
            f"Previous version (title: {version.title!r}) was stopped by the safety review: {reasons}. "
            "Rewrite it so that it is safe for every reader, keeping it personal and on topic.\n\n"
        )
    clip = ", ".join(f"{c:.2f}" for c in version.clip) or "none"
    visuals = "image-text" if not version.videos else "image/video-text"
    return (
        f"Previous version (title: {version.title!r}) scored CLIPScore {clip} ({visuals} match, max 2.5), "
        f"relevance {version.relevance:.2f} to the reader's history. Revise it so images and text match "
        "better and the post fits the reader more closely.\n\n"
    )
