"""Every prompt of the pipeline, versioned: a template's version is part of every cache key that uses it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_TEXT = {"type": "string", "maxLength": 200}


@dataclass(frozen=True)
class PromptTemplate:
    """A system prompt, a ``str.format`` user template and the JSON schema the answer must follow."""

    name: str
    version: int
    system: str
    user: str
    schema: dict[str, Any]

    @property
    def key(self) -> str:
        """``name@version``, for cache keys and metrics."""
        return f"{self.name}@{self.version}"

    def messages(self, fields: Mapping[str, Any], images: list[str] | None = None) -> list[dict[str, Any]]:
        """OpenAI chat messages for these fields; ``images`` (URLs or data URLs) precede the user text."""
        text = self.user.format(**fields)
        content: str | list[dict[str, Any]] = text
        if images:
            parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": url}} for url in images]
            content = [*parts, {"type": "text", "text": text}]
        return [{"role": "system", "content": self.system}, {"role": "user", "content": content}]


def _object(**properties: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


CAPTION_TEXT = PromptTemplate(
    "caption_text",
    3,
    "You summarise content items for a recommender system. Answer in JSON.",
    "Title: {title}\nText: {text}\nTags: {tags}\n\nIn one sentence, say what this item is about, its style "
    "and who would like it.",
    _object(summary={"type": "string", "minLength": 10, "maxLength": 160}),
)
CAPTION_IMAGE = PromptTemplate(
    "caption_image",
    1,
    "You describe images for a recommender system. Answer in JSON.",
    "Describe the image of the item '{title}': subject, setting, colours and mood.",
    _object(description=_TEXT),
)
CAPTION_FRAMES = PromptTemplate(
    "caption_frames",
    1,
    "You describe video frames for a recommender system. Answer in JSON.",
    "These are frames from the {segment} 8 seconds of the video of '{title}'. Describe what happens.",
    _object(description=_TEXT),
)
CAPTION_VIDEO = PromptTemplate(
    "caption_video",
    1,
    "You summarise videos for a recommender system. Answer in JSON.",
    "Opening of the video of '{title}': {opening}\nEnding: {ending}\n"
    "Describe the whole video in one paragraph.",
    _object(description=_TEXT),
)

_PREFERENCES = {
    "type": "array",
    "minItems": 1,
    "maxItems": 4,
    "items": _object(
        preference={"type": "string", "minLength": 3, "maxLength": 50},
        reason={"type": "string", "minLength": 3, "maxLength": 100},
    ),
}
# Measured with SmolLM2-135M: a worked example in the prompt gets copied verbatim (its genres, its titles),
# and "list their preferences" gets the list headers echoed back; naming genres and themes does best.
PROFILE = PromptTemplate(
    "profile",
    3,
    "You write a user's content preference profile from the items they engaged with. Answer in JSON.",
    "Items the user engaged with, most recent first:\n{history}\n\nItems a collaborative filter predicts "
    "they will like:\n{recommended}\n\nList the user's 2 to 4 favourite genres or themes, most important "
    "first. For each, the reason names one item above that shows it.",
    _object(preferences=_PREFERENCES),
)


# Once per catalogue: the choice a clarifying question offers for one taste cluster of items. Measured with
# SmolLM2-135M: asked for a free name it lists genres ("comedy, comedy, comedy, ...", "lucid, lucid, ..."),
# even when shown the group's distinctive tags; so it picks among names built from those tags
# (``cluster_label_schema``), and the free schema below is for groups without tags.
CLUSTER_LABEL = PromptTemplate(
    "cluster_label",
    3,
    "You name groups of catalogue items for a recommender system's onboarding questions. Answer in JSON.",
    "Tags that set this group apart: {tags}\n\nIts most popular items:\n{items}\n\nGive the group the "
    "short name (a genre, theme or mood) that a new user would pick when asked what they enjoy.",
    _object(label={"type": "string", "minLength": 3, "maxLength": 32}),
)


def cluster_label_schema(tags: list[str]) -> dict[str, Any]:
    """The label schema of a group with distinctive ``tags``: one tag, or two joined by '&'."""
    names = [tag.title() for tag in tags]
    pairs = [f"{a} & {b}" for a in names for b in names if a != b]
    return _object(label={"type": "string", "enum": names + pairs}) if names else CLUSTER_LABEL.schema


def rank_template(num_candidates: int, top_k: int) -> PromptTemplate:
    """The ranker: a profile and numbered candidates in, the indices of its top ``top_k`` out."""
    index = {"type": "integer", "minimum": 0, "maximum": num_candidates - 1}
    return PromptTemplate(
        "rank",
        1,
        "You rank candidate items for a user described by a preference profile. Answer in JSON.",
        "User profile:\n{profile}\n\nCandidates:\n{candidates}\n\n"
        f"Give the indices of the {top_k} candidates this user most likely engages with next, best first.",
        _object(top={"type": "array", "items": index, "minItems": top_k, "maxItems": top_k}),
    )


# SmolLM2-135M's gradients named nothing ("The user did not rank the item a user actually chose."), then,
# told which of the user's genres and tags the chosen item and the items above it carry, still nothing in 3
# of 3 demo users ("The (gad)d", one clause looped to the length bound): so the gradient picks what the
# profile misses and what it overstates from those genres and tags (``gradient_schema``), then says why.
GRADIENT = PromptTemplate(
    "gradient",
    6,
    "You critique user profiles that failed to rank the item a user actually chose. Answer in JSON.",
    "Current profile:\n{profile}\n\n"
    "With this profile the item the user actually chose was ranked {outcome}.\n"
    "Items the profile ranked above it:\n{wrong}\n\nThe item the user chose:\n{truth}\n\n"
    "Of the user's genres and tags, the chosen item has: {truth_has}. Only the items above it have: "
    "{wrong_have}.\n\n"
    "What the user did with posts written for them:\n{feedback}\n\n"
    "Name the genre or tag the profile misses, the one it overstates, and in one sentence why (the textual "
    "gradient).",
    _object(
        missing={"type": "string", "maxLength": 50},
        overstated={"type": "string", "maxLength": 50},
        why={"type": "string", "minLength": 10, "maxLength": 200},
    ),
)
NOTHING = "none"  # the gradient's answer when no genre or tag is missing (or overstated)


def gradient_schema(missing: list[str], overstated: list[str]) -> dict[str, Any]:
    """The gradient's schema for one user: ``missing`` and ``overstated`` chosen from these genres and tags
    (or ``NOTHING``)."""
    return _object(
        missing={"type": "string", "enum": [*missing, NOTHING]},
        overstated={"type": "string", "enum": [*overstated, NOTHING]},
        why=GRADIENT.schema["properties"]["why"],
    )


def gradient_text(missing: str, overstated: str, why: str) -> str:
    """What the optimizer is told: the profile's missing and overstated genres or tags, then why."""
    said = [
        f"It misses {missing}." * (missing != NOTHING),
        f"It overstates {overstated}." * (overstated != NOTHING),
    ]
    return " ".join(part for part in [*said, why] if part)


UPDATE = PromptTemplate(
    "update",
    3,
    "You revise user preference profiles following feedback. Answer in JSON.",
    "Current profile:\n{profile}\n\nFeedback:\n{gradient}\n\nWrite the improved profile: the user's 2 to "
    "4 favourite genres or themes, most important first, each with a reason.",
    _object(preferences=_PREFERENCES),
)


@dataclass(frozen=True)
class ScoringTemplate:
    """A text prefix with a ``{profile}`` slot; what follows (an item card) is scored by log-probability."""

    name: str
    version: int
    prefix: str

    @property
    def key(self) -> str:
        """``name@version``, for cache keys and metrics."""
        return f"{self.name}@{self.version}"

    def text(self, profile: str) -> str:
        """The prefix for one profile; an empty profile gives the item prior's prefix."""
        return self.prefix.format(profile=profile)


# The likelihood ranker (``profiling.rank_mode: likelihood``): a card's score is its log-probability after
# this prefix with the user's profile minus the same after the prefix with an empty profile (PMI).
LIKELIHOOD = ScoringTemplate(
    "likelihood", 1, "A user's content preferences:\n{profile}\n\nAn item this user engaged with next:\n"
)


def style_template(styles: list[str], max_styles: int = 3) -> PromptTemplate:
    """Ideation, step 1: pick the idea templates that fit the profile's top preference."""
    return PromptTemplate(
        "style",
        1,
        "You plan social media content for one user. Answer in JSON.",
        "User profile:\n{profile}\n\nIdea templates:\n{templates}\n\n"
        f"Pick up to {max_styles} templates that suit the profile's first preference.",
        _object(
            styles={
                "type": "array",
                "items": {"type": "string", "enum": styles},
                "minItems": 1,
                "maxItems": max_styles,
            }
        ),
    )


IDEA = PromptTemplate(
    "idea",
    1,
    "You plan social media content for one user. Answer in JSON.",
    "User profile:\n{profile}\n\nUse these formats: {styles}.\nPropose one concrete post idea.",
    _object(idea={"type": "string", "maxLength": 200}),
)


def post_template(num_images: int, num_videos: int = 0) -> PromptTemplate:
    """Writing: a post with title, body, tags, one prompt per image and (when asked) one per video clip."""
    fields: dict[str, Any] = {
        "title": {"type": "string", "maxLength": 80},
        "body": {"type": "string", "maxLength": 600},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 24}, "minItems": 1, "maxItems": 5},
        "image_prompts": _prompts(num_images),
    }
    media = ""
    if num_videos:
        fields["video_prompts"] = _prompts(num_videos)
        media = "Each video prompt describes one short clip: its scene and the motion in it.\n"
    return PromptTemplate(
        "post",
        2,
        "You write engaging social media posts tailored to one reader. Answer in JSON.",
        "Reader profile:\n{profile}\n\nIdea: {idea}\n\nStyle references (posts this reader liked):\n"
        "{exemplars}\n\n{feedback}" + media + "Write the post.",
        _object(**fields),
    )


def _prompts(count: int) -> dict[str, Any]:
    """Exactly ``count`` generation prompts, none empty (the tiny model has answered "": it draws noise)."""
    item = {"type": "string", "minLength": 3, "maxLength": 120}
    return {"type": "array", "items": item, "minItems": count, "maxItems": count}


_SCALE = {"type": "integer", "minimum": 1, "maximum": 5}
JUDGE_QUALITY = PromptTemplate(
    "judge_quality",
    1,
    "You are an impartial judge of social media posts. You do not know who or what wrote them. "
    "Answer in JSON.",
    "Items this reader already engaged with:\n{history}\n\nPost{image_note}:\n{post}\n\n"
    "Rate the post on integer scales from 1 to 5 with this rubric.\n"
    "novelty: 1 = repeats what the reader already saw; 3 = a familiar angle with a new detail; "
    "5 = a fresh, interesting angle the reader has not seen, still within their interests.\n"
    "text_aesthetic: 1 = incoherent or ungrammatical; 3 = clear but flat; 5 = polished, vivid and well "
    "structured.\n"
    "visual_aesthetic: 1 = broken, ugly or unrelated image; 3 = acceptable; 5 = striking, well composed "
    "and fitting the text (rate 3 when the post has no image).",
    _object(novelty=_SCALE, text_aesthetic=_SCALE, visual_aesthetic=_SCALE),
)
JUDGE_FACTS = PromptTemplate(
    "judge_facts",
    1,
    "You check social media posts for false or fabricated facts. Answer in JSON.",
    "Reference facts (descriptions of real catalogue items):\n{facts}\n\nPost:\n{post}\n\n"
    "Does the post state anything false or made up about real items (titles, people, dates, plots), "
    "judged against the reference facts? hallucination: 1 if it does, 0 if every factual claim is "
    "supported or it makes none. unsupported_claim: the false claim, or an empty string.",
    _object(
        hallucination={"type": "integer", "enum": [0, 1]},
        unsupported_claim={"type": "string", "maxLength": 100},
    ),
)

SAFETY = PromptTemplate(
    "safety",
    1,
    "You review social media posts before they are published, against a written content policy. "
    "Answer in JSON.",
    "Policy: {policy}\n\nPost (title, body, tags, prompts of its images and clips):\n{post}\n\n"
    "Does the post break the policy? verdict: 'unsafe' if it does, 'safe' if not. reason: which rule it "
    "breaks and where, or an empty string when safe.",
    _object(
        verdict={"type": "string", "enum": ["safe", "unsafe"]}, reason={"type": "string", "maxLength": 160}
    ),
)


def profile_text(preferences: list[dict[str, str]]) -> str:
    """A profile's preferences as numbered lines (what rankers and generators read)."""
    return "\n".join(f"{n}. {p['preference']} ({p['reason']})" for n, p in enumerate(preferences, 1))
