"""The safety gate every post passes before anyone sees it: blocked terms, a written-policy judgement by the
judge LLM, and an image safety checker over every image and sampled video frame.

Like ``PostWriter`` it checks a batch of users at once (one LLM call list, one checker call over every
image and frame) and reaches its models through small protocols, so the batch job and Serve share it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from models.llm.prompts import SAFETY

if TYPE_CHECKING:
    from models.config import SafetyConfig
    from models.generation.writer import Complete, PostVersion

JUDGE_ROLE = "judge"  # the LLM role of the policy judgement


class ImageChecker(Protocol):
    """Flags unsafe images (``ImageSafetyChecker`` in process, the scorer deployment behind an adapter)."""

    def unsafe(self, images: list[Image.Image]) -> np.ndarray:
        """One bool per image: True where the image is unsafe."""
        ...


@dataclass
class SafetyFlag:
    """One reason a version may not be shown: which check flagged it and why."""

    check: str  # "terms", "policy", "image" or "video"
    reason: str

    def to_dict(self) -> dict[str, str]:
        """``{"check", "reason"}``."""
        return {"check": self.check, "reason": self.reason}


@dataclass
class SafetyVerdict:
    """What was checked on one version, what was flagged, and which images and clips were flagged."""

    checked: list[str]
    flags: list[SafetyFlag] = field(default_factory=list)
    flagged_media: dict[str, list[int]] = field(default_factory=dict)  # "image"/"video" -> slot indices

    @property
    def safe(self) -> bool:
        """True when no check flagged the version."""
        return not self.flags

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready checks, flags and flagged media slots."""
        return {
            "checked": self.checked,
            "flags": [flag.to_dict() for flag in self.flags],
            "flagged_media": self.flagged_media,
        }


def blocked_term_pattern(terms: list[str]) -> re.Pattern[str] | None:
    """One case-insensitive pattern matching any term as a whole word or phrase, with any whitespace between
    a phrase's words (None for no terms)."""
    if not terms:
        return None
    phrases = sorted({tuple(_normalised(term).split()) for term in terms}, key=len, reverse=True)
    alternatives = "|".join(r"\s+".join(map(re.escape, words)) for words in phrases)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


def blocked_terms_in(text: str, pattern: re.Pattern[str] | None) -> list[str]:
    """The distinct blocked terms found in ``text`` (compatibility-normalised, case-folded)."""
    if pattern is None:
        return []
    return sorted({" ".join(found.split()) for found in pattern.findall(_normalised(text))})


def _normalised(text: str) -> str:
    """NFKC and case folding, so full-width or styled letters and capitals do not slip past the terms."""
    return unicodedata.normalize("NFKC", text).casefold()


def post_text(version: PostVersion) -> str:
    """Everything a reader or a renderer sees of a version as text: title, body, tags and media prompts."""
    return "\n".join(
        [version.title, version.body, *version.tags, *version.image_prompts, *version.video_prompts]
    )


@dataclass
class SafetyGate:
    """Checks versions of posts for a batch of users; every version gets a ``SafetyVerdict``."""

    blocked_terms: list[str] = field(default_factory=list)
    complete: Complete | None = None  # the judge role; None skips the policy judgement
    policy: str = ""
    images: ImageChecker | None = None  # None skips the image and video checks
    video_frames: int = 4  # evenly spaced frames of a clip that the image checker sees

    @classmethod
    def from_config(
        cls, config: SafetyConfig, complete: Complete, images: ImageChecker | None, video_frames: int
    ) -> SafetyGate:
        """The gate a config asks for; its policy judgement goes to ``complete``'s judge role."""
        return cls(
            blocked_terms=config.blocked_terms,
            complete=complete if config.policy_check else None,
            policy=config.policy,
            images=images if config.image_checker is not None else None,
            video_frames=video_frames,
        )

    def __post_init__(self) -> None:
        self.pattern = blocked_term_pattern(self.blocked_terms)
        if self.complete is not None and not self.policy:
            raise ValueError("the policy judgement needs a written policy")

    @property
    def checks(self) -> list[str]:
        """The checks this gate runs, in order."""
        names = ["terms"] if self.pattern is not None else []
        names += ["policy"] if self.complete is not None else []
        return names + (["image", "video"] if self.images is not None else [])

    def check(self, versions: dict[str, PostVersion]) -> dict[str, SafetyVerdict]:
        """A verdict per user's version: terms, then one policy call list, then one image-checker call."""
        verdicts = {user_id: SafetyVerdict(self.checks) for user_id in versions}
        for user_id, version in versions.items():
            found = blocked_terms_in(post_text(version), self.pattern)
            if found:
                verdicts[user_id].flags.append(
                    SafetyFlag("terms", f"contains blocked terms: {', '.join(found)}")
                )
        if self.complete is not None:
            self._judge(versions, verdicts)
        if self.images is not None:
            self._check_media(versions, verdicts)
        return verdicts

    def _judge(self, versions: dict[str, PostVersion], verdicts: dict[str, SafetyVerdict]) -> None:
        """The judge role's policy verdict on each version's text; an unanswered judgement is a flag."""
        assert self.complete is not None
        requests = [
            {
                "row_key": user_id,
                "messages": SAFETY.messages({"policy": self.policy, "post": post_text(version)}),
                "schema": SAFETY.schema,
            }
            for user_id, version in versions.items()
        ]
        answers = self.complete(requests, JUDGE_ROLE)
        for user_id in versions:
            answer = answers.get(user_id)
            if answer is None or answer.value is None:
                error = (
                    f"{answer.error} after {answer.attempts} attempts" if answer is not None else "no answer"
                )
                verdicts[user_id].flags.append(
                    SafetyFlag("policy", f"the policy check gave no verdict ({error})")
                )
            elif answer.value["verdict"] == "unsafe":
                reason = answer.value["reason"] or "no reason given"
                verdicts[user_id].flags.append(SafetyFlag("policy", f"breaks the content policy: {reason}"))

    def _check_media(self, versions: dict[str, PostVersion], verdicts: dict[str, SafetyVerdict]) -> None:
        """Every image and each clip's sampled frames in one checker call; a clip is unsafe if a frame is."""
        slots: list[tuple[str, str, int]] = []  # (user, kind, slot) per frame
        frames: list[Image.Image] = []
        for user_id, version in versions.items():
            for index, image in enumerate(version.images):
                slots.append((user_id, "image", index))
                frames.append(image)
            for index, clip in enumerate(version.videos):
                sampled = clip.sample(self.video_frames)
                slots += [(user_id, "video", index)] * len(sampled)
                frames += sampled
        if not frames:
            return
        assert self.images is not None
        unsafe = self.images.unsafe(frames)
        flagged = sorted({slot for slot, bad in zip(slots, unsafe, strict=True) if bad})
        for user_id, kind, index in flagged:
            verdict = verdicts[user_id]
            verdict.flagged_media.setdefault(kind, []).append(index)
            name = "an image" if kind == "image" else "a clip"
            verdict.flags.append(SafetyFlag(kind, f"the image safety checker flagged {name} (slot {index})"))
