"""Request and response bodies of the TailorMind HTTP API, with the limits every request must respect."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

MAX_HISTORY = 50
MAX_TEXT_CHARS = 4000
MAX_IMAGES_PER_ITEM = 2
MAX_IMAGES_PER_REQUEST = 8
MAX_REFERENCE_IMAGES = 2
MAX_POST_IMAGES = 4
MAX_POST_VIDEOS = 2
MAX_REFLECTION_ROUNDS = 3
MAX_URI_CHARS = 2_000_000  # a data: URI of a few-megapixel PNG
MAX_ID_CHARS = 200
MAX_ANSWERS = 5  # one per clarifying question (coldstart.num_questions is 3 to 5)


class Strict(BaseModel):
    """A request body: unknown fields are refused (a typo is an error, not a silent default)."""

    model_config = ConfigDict(extra="forbid")


class HistoryItem(Strict):
    """One item the user engaged with; ``image_uris`` are data: URIs or files under the media roots."""

    title: str = Field(min_length=1, max_length=300)
    text: str = Field("", max_length=MAX_TEXT_CHARS)
    tags: list[str] = Field([], max_length=20)
    image_uris: list[str] = Field([], max_length=MAX_IMAGES_PER_ITEM)

    @model_validator(mode="after")
    def _bounded(self) -> HistoryItem:
        if any(len(tag) > 50 for tag in self.tags):
            raise ValueError("tags must be at most 50 characters each")
        if any(len(uri) > MAX_URI_CHARS for uri in self.image_uris):
            raise ValueError(f"image_uris must be at most {MAX_URI_CHARS} characters each")
        return self


class Answer(Strict):
    """A cold-start user's answer to one clarifying question: the question's id and the choice picked."""

    question_id: str = Field(min_length=1, max_length=20)
    choice: str = Field(min_length=1, max_length=200)


class ProfileRequest(Strict):
    """POST /v1/profile: the history to profile; a short or empty one gets clarifying questions unless it
    comes with their ``answers``."""

    history: list[HistoryItem] = Field([], max_length=MAX_HISTORY)
    answers: list[Answer] = Field([], max_length=MAX_ANSWERS)

    @model_validator(mode="after")
    def _few_images(self) -> ProfileRequest:
        _check_image_count(self.history)
        return self


class GenerateRequest(Strict):
    """POST /v1/generate: a profile, a history, or both (the history is profiled when no profile is given);
    a cold-start user's ``answers`` may stand in for the history."""

    history: list[HistoryItem] = Field([], max_length=MAX_HISTORY)
    answers: list[Answer] = Field([], max_length=MAX_ANSWERS)
    profile: str | None = Field(None, min_length=1, max_length=MAX_TEXT_CHARS)
    num_images: int | None = Field(None, ge=0, le=MAX_POST_IMAGES)
    num_videos: int | None = Field(None, ge=0, le=MAX_POST_VIDEOS)
    reflection_rounds: int | None = Field(None, ge=0, le=MAX_REFLECTION_ROUNDS)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    user_id: str | None = Field(
        None, min_length=1, max_length=MAX_ID_CHARS, description="who the post is for (feedback names them)"
    )
    reference_image_uris: list[str] = Field(
        [],
        max_length=MAX_REFERENCE_IMAGES,
        description="images the post's images are drawn from (the same rules as history image_uris)",
    )

    @model_validator(mode="after")
    def _has_subject(self) -> GenerateRequest:
        if not self.history and not self.answers and self.profile is None:
            raise ValueError("give a profile, a history, or the answers to the clarifying questions")
        if any(len(uri) > MAX_URI_CHARS for uri in self.reference_image_uris):
            raise ValueError(f"reference_image_uris must be at most {MAX_URI_CHARS} characters each")
        _check_image_count(self.history, len(self.reference_image_uris))
        return self


def _check_image_count(history: list[HistoryItem], references: int = 0) -> None:
    count = sum(len(item.image_uris) for item in history) + references
    if count > MAX_IMAGES_PER_REQUEST:
        raise ValueError(f"at most {MAX_IMAGES_PER_REQUEST} images per request, got {count}")


class Preference(BaseModel):
    """One ranked preference with its reason."""

    preference: str
    reason: str


class Profile(BaseModel):
    """A structured profile and its text form."""

    preferences: list[Preference]
    text: str


class Question(BaseModel):
    """A clarifying question for a user with little history; each choice is a taste of the catalogue."""

    id: str
    text: str
    choices: list[str]


class ProfileResponse(BaseModel):
    """Response of /v1/profile: the profile, or (short history, no answers) the questions to answer first."""

    profile: Profile | None = None
    questions: list[Question] | None = None


class PostImage(BaseModel):
    """One generated image and the prompt it was drawn from."""

    prompt: str
    png_base64: str


class PostVideo(BaseModel):
    """One generated clip (VP9 WebM) and the prompt it was drawn from."""

    prompt: str
    webm_base64: str
    frames: int
    fps: float


class Post(BaseModel):
    """The best version of a generated post."""

    title: str
    body: str
    tags: list[str]
    images: list[PostImage]
    videos: list[PostVideo] = []


class PostScores(BaseModel):
    """Cohesion scores of a version (mean CLIPScore over its images and clips, history relevance)."""

    clip: float
    relevance: float
    combined: float


class SafetyFlagged(BaseModel):
    """A flag the safety gate raised on one version (that version was rewritten or re-rendered)."""

    version: int
    check: str
    reason: str


class SafetyReport(BaseModel):
    """What the safety gate checked on the returned version, and what it flagged on earlier versions."""

    checked: list[str]
    flagged: list[SafetyFlagged]


class GenerateResponse(BaseModel):
    """Response of /v1/generate: the best version, its scores, and how the post came about."""

    post_id: str  # what /v1/feedback names the post by
    post: Post
    scores: PostScores
    versions: int
    version_scores: list[PostScores]
    profile: str
    styles: list[str]
    idea: str
    exemplars: list[str]
    safety: SafetyReport


class FeedbackRequest(Strict):
    """POST /v1/feedback: what a user did with a generated post."""

    event_id: str = Field(
        min_length=1, max_length=MAX_ID_CHARS, description="the client's id: a retry repeats it"
    )
    user_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    post_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="the post_id /v1/generate returned")
    action: Literal["keep", "edit", "discard"]
    edited_text: str | None = Field(None, min_length=1, max_length=MAX_TEXT_CHARS)
    timestamp: AwareDatetime

    @model_validator(mode="after")
    def _edit_has_text(self) -> FeedbackRequest:
        if (self.action == "edit") != (self.edited_text is not None):
            raise ValueError(
                "edited_text is required with action 'edit' and not allowed with keep or discard"
            )
        return self


class FeedbackResponse(BaseModel):
    """Response of /v1/feedback: sent only once the event is persisted."""

    event_id: str
    stored: bool  # False: this event id was stored before (a retry), and is kept once
