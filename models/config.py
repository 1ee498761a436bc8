"""Typed, validated configuration: YAML files plus ``--set dotted.key=value`` overrides."""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from models.config_base import StrictModel
from models.errors import TailorMindError
from models.llm.config import LLMConfig
from models.url_roots import url_root


class RayConfig(StrictModel):
    """Where the Ray cluster is: join ``address`` (or ``RAY_ADDRESS``) or start a local one."""

    address: str | None = Field(None, description="Ray address to join; None starts a local cluster")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local cluster; None = this machine's")
    num_gpus: int | None = Field(None, ge=0, description="GPUs of a local cluster; None = detected")
    object_store_memory_gb: float | None = Field(None, gt=0, description="object store of a local cluster")


class SynthConfig(StrictModel):
    """A synthetic dataset with planted topics, generated when no dataset path is given."""

    users: int = Field(2000, ge=1)
    items: int = Field(1000, ge=1)
    tags: int = Field(50, ge=1)
    interactions: int | None = Field(None, ge=1, description="target before removing repeats")
    image_share: float = Field(0.05, ge=0, le=1)


class DataConfig(StrictModel):
    """The dataset a pipeline reads: an existing directory, a MovieLens import or a synthetic one."""

    path: str | None = Field(None, description="TailorBench dataset directory (local path, s3:// or gs://)")
    movielens_src: str | None = Field(None, description="import MovieLens from this folder when no path")
    synth: SynthConfig | None = Field(None, description="generate this dataset when no path or MovieLens")
    strict: bool = Field(False, description="fail on the first bad row instead of quarantining")


class CFConfig(StrictModel):
    """Hypergraph collaborative filtering: model size, training, early stopping and Ray Train resources."""

    epochs: int = Field(200, ge=1, description="upper bound on passes over the train pairs")
    time_budget_s: float | None = Field(
        None,
        gt=0,
        description="training stops at the first validation after this many seconds of training (best kept)",
    )
    max_steps: int | None = Field(
        None,
        ge=1,
        description="training stops after this many optimiser steps (best kept), inside an epoch too: a step "
        "cap for graphs whose epoch alone is hours",
    )
    layers: int = Field(3, ge=0)
    dim: int = Field(64, ge=1)
    loss: Literal["bpr", "softmax"] = Field(
        "softmax",
        description="softmax: scores over a temperature, each positive against negatives shared by the step "
        "(user vectors unit-length, item norms free to carry popularity); bpr: never-seen negatives per "
        "positive",
    )
    bpr_negatives: int = Field(
        4, ge=1, description="bpr: never-seen negatives drawn per positive, each its own BPR term in the step"
    )
    negatives: int | None = Field(
        None,
        ge=1,
        description="softmax: uniform negatives shared by each step; unset, a tenth of the catalogue between "
        "1,024 and 4,096 (on Gowalla's 41k items 4,096 lifted validation Recall@20 by 0.008-0.012 at the "
        "same step over 1,024, at twice the step's time; MovieLens' 9.7k items keep 1,024)",
    )
    temperature: float = Field(
        0.2,
        gt=0,
        description="softmax: scores are divided by it (0.1 converged sooner to a lower plateau: the kept "
        "Gowalla model's validation and test Recall@20 0.206 and 0.158, against 0.213 and 0.169 at 0.2; "
        "MovieLens validation 0.138 against 0.143)",
    )
    batch_size: int = Field(
        4096,
        ge=1,
        description="positive pairs per optimiser step, over all workers (each step propagates the whole "
        "graph once)",
    )
    lr: float = Field(
        0.003,
        gt=0,
        description="Adam's learning rate (0.01 fit Gowalla's train pairs sooner and its validation and test "
        "items worse: validation Recall@20 0.2105 against 0.2151 at 0.003 in 15 minutes)",
    )
    lr_decay: float = Field(
        0.1,
        gt=0,
        le=1,
        description="on a plateau (where early stopping would end training) the learning rate is multiplied "
        "by it and patience starts again, ``lr_decays`` times before a plateau stops training",
    )
    lr_decays: int = Field(1, ge=0, description="learning-rate decays on plateaus (0 = stop on the first)")
    l2: float = Field(1e-4, ge=0, description="L2 on the batch's layer-0 embeddings")
    eval_every_steps: int = Field(
        100,
        ge=1,
        description="optimiser steps between validations (and checkpoints; the time budget is "
        "checked there too)",
    )
    min_steps: int = Field(
        600, ge=0, description="no early stopping and no learning-rate decay before this many steps"
    )
    patience_steps: int = Field(
        200,
        ge=1,
        description="early stopping (or a learning-rate decay) needs the patience clock this many steps old, "
        "and twice as old when the latest validation is within noise of the best",
    )
    stop_z: float = Field(
        2.0,
        ge=0,
        description="a decline is beyond noise when the latest validation is this many paired standard "
        "errors below the best (noise on a few hundred validation users cannot end training early)",
    )
    renew_z: float = Field(
        1.0,
        ge=0,
        description="a new best restarts early stopping's patience only when it lies this many paired "
        "standard errors above the best that last restarted it (a creep of bests within noise does not)",
    )
    max_valid_users: int | None = Field(
        10_000, ge=1, description="validation users scored at each validation (seeded sample); None = all"
    )
    use_tags: bool = Field(True, description="false = plain user-item LightGCN (the paper's ablation)")
    num_workers: int = Field(1, ge=1)
    cpus_per_worker: int = Field(
        2,
        ge=1,
        description="CPUs (and torch threads) of each Ray Train worker (a step's sparse products and "
        "matmuls use them all)",
    )
    use_gpu: bool = False
    max_failures: int = Field(2, ge=0, description="worker failures Ray Train recovers from")
    fault_injection_step: int | None = Field(
        None, ge=1, description="fault-tolerance drill: rank 0 dies once after the validation at this step"
    )
    topk: int = Field(20, ge=1, description="CF items per user kept by score-topk")

    def shared_negatives(self, num_items: int) -> int:
        """Uniform negatives each softmax step shares: ``negatives``, else a tenth of the catalogue within
        [1,024, 4,096]."""
        return self.negatives or min(max(num_items // 10, 1024), 4096)


class ProfilingConfig(StrictModel):
    """Captioning scope, profile evidence and textual-gradient refinement."""

    max_users: int | None = Field(8, ge=1, description="users profiled (seeded sample); None = all")
    history_items: int = Field(20, ge=1, description="most recent train items in the evidence")
    cf_items: int = Field(10, ge=0, description="CF top-K items added to the evidence (0 = none)")
    evidence_chars: int = Field(4000, ge=200, description="evidence budget (about 4 characters a token)")
    caption_scope: Literal["evidence", "history", "all", "none"] = Field(
        "evidence",
        description="items captioned by the VLM: the cohort's evidence and candidates, its evidence only "
        "(history: candidates are carded from their own text), all, or none (item cards are then the items' "
        "own titles, texts and tags)",
    )
    candidate_chars: int = Field(120, ge=20, description="caption characters per ranking candidate")
    num_negatives: int = Field(
        99, ge=1, description="sampled negatives beside each held-out positive (TailorBench: 99)"
    )
    rounds: int = Field(3, ge=0, description="N_max refinement rounds")
    rank_top_k: int = Field(
        20, ge=1, description="indices the ranker returns; its Recall/NDCG are reported up to this depth"
    )
    valid_negatives: Literal["fixed", "resample"] = Field(
        "fixed",
        description="validation negatives per refinement round: fixed (reshuffled each round, so ranks of "
        "rounds compare and the best profile is chosen on one candidate set) or resample (the paper: 99 new "
        "never-seen items each round)",
    )
    rank_permutations: int = Field(
        1, ge=1, description="listwise: shuffles ranked per user and combined by Borda count; 1 = off"
    )
    rank_mode: Literal["likelihood", "listwise"] = Field(
        "likelihood",
        description="likelihood: each candidate's card scored by its log-probability given the profile minus "
        "given an empty profile (order-free, no parsing); listwise: the LLM lists its top indices",
    )
    valid_positives: int = Field(
        3,
        ge=1,
        description="validation positives per user: the held-out validation item and, where the user keeps "
        "at least 3 train items, up to this many minus one of their latest train items (taken out of the "
        "evidence), so the best round is not chosen on one item's luck",
    )
    controls: bool = Field(
        False,
        description="eval adds the controls: the same ranker with another user's profile (a fixed "
        "derangement) and the item prior alone (likelihood mode)",
    )
    candidate_sets: list[Literal["uniform", "popularity_matched"]] = Field(
        ["uniform"],
        description="test candidate sets: uniform never-seen negatives (TailorBench), and negatives from the "
        "positive's popularity decile (most popular is near chance there)",
    )
    video_frames_per_segment: int = Field(2, ge=1)


class VideoConfig(StrictModel):
    """Text to video: the diffusers pipeline and how it samples (used when ``generation.num_videos`` > 0)."""

    model: str = Field(
        "tiny://video",
        description="diffusers text-to-video pipeline source (Wan-AI/Wan2.1-T2V-1.3B-Diffusers)",
    )
    steps: int = Field(25, ge=1, le=100)
    frames: int = Field(17, ge=1, le=257, description="frames per clip; Wan and CogVideoX take 4k+1")
    height: int = Field(256, ge=16, le=1280, multiple_of=16, description="pixels, a multiple of 16")
    width: int = Field(256, ge=16, le=1280, multiple_of=16, description="pixels, a multiple of 16")
    fps: int = Field(8, ge=1, le=60, description="frame rate of the written clip")
    guidance_scale: float = Field(5.0, ge=0)
    dtype: str = Field("float32", description="pipeline dtype (bfloat16 on GPU)")
    score_frames: int = Field(4, ge=1, le=32, description="evenly spaced frames CLIPScore rates per clip")


class SafetyConfig(StrictModel):
    """The gate every post passes before anyone sees it: blocked terms, a written policy, an image checker."""

    blocked_terms: list[str] = Field(
        [], description="words or phrases a post must never contain (whole words, any case)"
    )
    policy_check: bool = Field(True, description="the judge role rates each post's text against the policy")
    policy: str = Field(
        "No sexual content, no graphic violence or gore, no hate or harassment of people or groups, no "
        "self-harm, no illegal drugs or weapons, no personal data of real private people.",
        min_length=1,
        description="the written policy the judge role applies",
    )
    image_checker: str | None = Field(
        "tiny://safety",
        description="diffusers StableDiffusionSafetyChecker source "
        "(CompVis/stable-diffusion-safety-checker); None checks no images or clips",
    )
    image_sensitivity: float = Field(
        0.0,
        ge=-1,
        le=2,
        description="added to each concept score: higher flags more (diffusers' adjustment)",
    )
    rewrites: int = Field(2, ge=0, le=5, description="revisions a flagged post gets before it is refused")

    @field_validator("blocked_terms")
    @classmethod
    def _terms_have_words(cls, terms: list[str]) -> list[str]:
        if any(not term.strip() for term in terms):
            raise ValueError("blocked_terms must not hold empty or blank terms")
        return terms


class GenerationConfig(StrictModel):
    """Posts: how many users, images and videos, the diffusion and scoring models, reflection rounds."""

    max_users: int | None = Field(4, ge=1, description="users (from the refined profiles) to write for")
    batch_size: int = Field(8, ge=1, description="users one writer actor takes at a time")
    workers: int = Field(1, ge=1, description="writer actors (each holds the diffusion and scoring models)")
    num_images: int = Field(1, ge=0, le=4)
    num_videos: int = Field(0, ge=0, le=2, description="short clips per post, from the video model")
    reflection_rounds: int = Field(3, ge=0)
    image_model: str = Field("tiny://sd", description="diffusers text-to-image pipeline source")
    image_steps: int = Field(25, ge=1, le=100)
    image_size: int = Field(512, ge=32, le=2048)
    guidance_scale: float = Field(7.5, ge=0)
    reference_strength: float = Field(
        0.6, gt=0, le=1, description="image to image from a reference: 1 ignores it, lower keeps more of it"
    )
    clip_model: str = Field(
        "tiny://clip",
        description="transformers CLIP source (openai/clip-vit-base-patch32) or open_clip:ARCH@PRETRAINED",
    )
    device: str = Field("cpu", description="device of the diffusion and scoring models")
    dtype: str = Field("float32", description="diffusion dtype (float16 on GPU)")
    video: VideoConfig = VideoConfig()
    safety: SafetyConfig = SafetyConfig()


JudgeMethod = Literal["ground_truth", "full", "no_profile", "no_rag", "no_reflection", "no_refinement"]


class JudgeConfig(StrictModel):
    """TailorBench content evaluation: which methods are compared, on how many users, with which facts."""

    max_users: int | None = Field(4, ge=1, description="users (from the refined profiles); None = all")
    methods: list[JudgeMethod] = Field(
        ["ground_truth", "full", "no_profile", "no_rag", "no_reflection", "no_refinement"],
        min_length=1,
        description="ground_truth = the user's test item; the rest are the system and its ablations",
    )
    generic_profile: str = Field(
        "A general audience with broad, mainstream interests.", description="the no_profile prompt"
    )
    fact_top_k: int = Field(5, ge=1, description="catalogue items retrieved as facts per post")
    fact_pool: Literal["catalogue", "cohort"] = Field(
        "catalogue",
        description="where facts are retrieved from: every catalogue card (embedded once per card and kept "
        "across a run folder's reruns), or the cards of the cohort's items (no pass over the catalogue: "
        "MovieLens' 9,742 cards take about 160 s to embed on 2 cores)",
    )


class DeploymentConfig(StrictModel):
    """Replicas and resources of one Serve deployment; autoscaled up to ``max_replicas`` when set."""

    replicas: int = Field(1, ge=1, description="replicas (the autoscaling minimum when max_replicas is set)")
    max_replicas: int | None = Field(None, ge=1, description="autoscale up to this many; None = fixed")
    target_ongoing_requests: float = Field(2.0, gt=0, description="autoscaling target per replica")
    max_ongoing_requests: int = Field(16, ge=1, description="requests one replica works on at once")
    max_queued_requests: int = Field(
        -1,
        ge=-1,
        description="requests that may wait for a replica; past it 503 + Retry-After; -1 = no bound",
    )
    retry_after_s: float = Field(10.0, ge=0, description="the Retry-After of a shed request's 503")
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0, description="GPU (fraction) per replica")


class DiffusionDeploymentConfig(DeploymentConfig):
    """The diffusion deployment: replicas plus how ``@serve.batch`` groups concurrent images."""

    max_batch_size: int = Field(4, ge=1, description="images rendered by one pipeline call")
    batch_wait_timeout_s: float = Field(0.05, ge=0, description="wait for a batch to fill")

    @model_validator(mode="after")
    def _batches_can_fill(self) -> DiffusionDeploymentConfig:
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) must be at least max_batch_size "
                f"({self.max_batch_size}): a replica never holds more requests, so batches would stay small"
            )
        return self


class ServeConfig(StrictModel):
    """The Serve application: where it listens, who may call it, what it may read, its deployments."""

    host: str = Field("127.0.0.1", description="HTTP interface; 0.0.0.0 exposes it beyond this machine")
    port: int = Field(8000, ge=1, le=65535)
    auth_token_env: str | None = Field(
        None, description="environment variable with the bearer token the API requires; None = no token"
    )
    media_roots: list[str] = Field(
        [], description="folders that request image_uris may point into; data: URIs are always accepted"
    )
    url_roots: list[str] = Field(
        [], description="http(s) URL prefixes that request image_uris may be fetched from; no other URL is"
    )
    fetch_timeout_s: float = Field(10.0, gt=0, le=120, description="socket timeout of each image fetch")
    max_body_mb: float = Field(8.0, gt=0, description="larger request bodies get 413")
    request_timeout_s: float | None = Field(
        300.0, gt=0, description="a request not answered in this time gets 408; None = no limit"
    )
    ingress: DeploymentConfig = DeploymentConfig(num_cpus=0.25, max_ongoing_requests=32)
    diffusion: DiffusionDeploymentConfig = DiffusionDeploymentConfig()
    video: DiffusionDeploymentConfig | None = Field(
        None, description="the text-to-video deployment (generation.video); None = this app makes no clips"
    )
    scorer: DeploymentConfig = DeploymentConfig(num_cpus=0.5)

    @field_validator("url_roots")
    @classmethod
    def _canonical_url_roots(cls, roots: list[str]) -> list[str]:
        return [url_root(root) for root in roots]


def absolute_local(uri: str | None) -> str | None:
    """A plain path made absolute (so every replica and worker finds the same place); URIs as they are."""
    if uri is None or "://" in uri:
        return uri
    return str(Path(uri).expanduser().resolve())


class FeedbackConfig(StrictModel):
    """Where generated posts and people's feedback on them are kept, and how refinement reads them."""

    uri: str | None = Field(
        None,
        description="feedback store (a folder or a pyarrow.fs URI such as s3://bucket/feedback); None keeps "
        "no feedback: /v1/feedback answers 404 and refinement sees none",
    )
    max_events: int = Field(8, ge=1, le=50, description="latest events per user shown to the gradient step")
    edit_chars: int = Field(200, ge=20, le=2000, description="characters of an edit's removed and added text")
    compact_after_s: float = Field(
        3600.0,
        ge=0,
        description="event files this old are compacted into segments; a repeated event id is answered "
        "duplicate or 409 only within this window, and a later repeat is dropped when read (the first "
        "received wins)",
    )
    compact_min_files: int = Field(
        10_000, ge=1, description="the feedback stage compacts once this many event files are old enough"
    )
    segment_rows: int = Field(1_000_000, ge=1, description="events per compacted segment file (at least)")

    _absolute = field_validator("uri")(lambda uri: absolute_local(uri))


class ColdStartConfig(StrictModel):
    """Users with little or no history: taste clusters of the catalogue, clarifying questions, a default."""

    min_history: int = Field(
        3, ge=1, description="users (and requests) with fewer interactions than this are cold-start"
    )
    clusters: int = Field(12, ge=2, le=100, description="taste clusters of the CF item embeddings")
    items_per_cluster: int = Field(5, ge=1, le=20, description="most popular items kept per cluster")
    num_questions: int = Field(4, ge=3, le=5, description="clarifying questions asked of a cold-start user")
    choices_per_question: int = Field(3, ge=2, le=6, description="clusters offered by each question")
    default_clusters: int = Field(
        3, ge=1, description="the curated default: the most popular items of this many most popular clusters"
    )
    default_items_per_cluster: int = Field(3, ge=1, le=20)
    max_users: int | None = Field(
        8, ge=0, description="cold-start users profiled by the batch pipeline (seeded sample); None = all"
    )
    catalogue: str | None = Field(
        None,
        description="Serve: the catalogue stage's RUN/catalogue/clusters.parquet; None = no clarifying "
        "questions or default (a request then needs at least one history item)",
    )
    catalogue_optional: bool = Field(
        False,
        description="Serve: when the catalogue does not exist (yet), warn and serve without questions rather "
        "than refuse to start (the demo config, before `make demo` has written one)",
    )

    @model_validator(mode="after")
    def _enough_clusters(self) -> ColdStartConfig:
        asked = self.num_questions * self.choices_per_question
        if self.clusters < max(asked, self.default_clusters):
            raise ValueError(
                f"coldstart.clusters ({self.clusters}) must be at least num_questions x choices_per_question "
                f"({asked}) and default_clusters ({self.default_clusters}): every choice is its own cluster"
            )
        return self

    _absolute = field_validator("catalogue")(lambda path: absolute_local(path))


class ReportConfig(StrictModel):
    """The run report."""

    sample_posts: int = Field(
        20,
        ge=0,
        description="posts shown in full (a seeded sample of users); the rest are in the paged index",
    )


class TailorMindConfig(StrictModel):
    """The whole configuration: one section per stage, every field with a default."""

    seed: int = Field(0, description="seed for every sampler, initialiser and generator")
    ray: RayConfig = RayConfig()
    data: DataConfig = DataConfig()
    cf: CFConfig = CFConfig()
    profiling: ProfilingConfig = ProfilingConfig()
    generation: GenerationConfig = GenerationConfig()
    judge: JudgeConfig = JudgeConfig()
    llm: LLMConfig = LLMConfig()
    serve: ServeConfig = ServeConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    coldstart: ColdStartConfig = ColdStartConfig()
    report: ReportConfig = ReportConfig()


def config_digest(section: BaseModel | dict[str, Any] | None) -> str:
    """Stable hex digest of a config section (or plain dict) for stage markers and cache keys."""
    payload = section.model_dump(mode="json") if isinstance(section, BaseModel) else section
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TailorMindConfig:
    """Read a YAML config (or the defaults), apply ``dotted.key=value`` overrides and validate."""
    raw: dict[str, Any] = {}
    source = "the built-in defaults"
    if path is not None:
        source = str(path)
        raw = _read_yaml(Path(path))
    origin: dict[tuple[str, ...], str] = {}
    for item in overrides:
        keys, value = _parse_override(item)
        _set_dotted(raw, keys, value, item)
        origin[keys] = f"--set {item}"
    try:
        return TailorMindConfig.model_validate(raw)
    except ValidationError as exc:
        raise TailorMindError(_explain(exc, source, origin)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TailorMindError(f"config file {path} does not exist (pass an existing YAML file to --config).")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise TailorMindError(f"config file {path} is not valid YAML: {exc}".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TailorMindError(
            f"config file {path} must hold a mapping of sections (e.g. 'cf: {{epochs: 5}}'), "
            f"not a {type(data).__name__}."
        )
    return data


def _parse_override(item: str) -> tuple[tuple[str, ...], Any]:
    key, sep, text = item.partition("=")
    keys = tuple(key.strip().split("."))
    if not sep or not all(keys):
        raise TailorMindError(
            f"override '{item}' is not of the form dotted.key=value (for example --set cf.epochs=10)."
        )
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return keys, value


def _set_dotted(raw: dict[str, Any], keys: tuple[str, ...], value: Any, item: str) -> None:
    node = raw
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            prefix = ".".join(keys[: depth + 1])
            raise TailorMindError(
                f"override '{item}' reaches into '{prefix}', which is a value, not a section."
            )
        node = child
    node[keys[-1]] = value


def _explain(exc: ValidationError, source: str, origin: dict[tuple[str, ...], str]) -> str:
    problems = []
    for err in exc.errors():
        loc = tuple(str(part) for part in err["loc"])
        key = ".".join(loc)
        where = origin.get(loc, source)
        if err["type"] == "extra_forbidden":
            hint = _did_you_mean(loc)
            problems.append(f"unknown key '{key}' (from {where}){hint}")
        elif err["type"] == "missing":
            problems.append(f"missing key '{key}' (in {where})")
        else:
            problems.append(f"key '{key}' (from {where}): {err['msg']}, got {err.get('input')!r}")
    count = len(problems)
    head = f"the config has {count} problem{'s' if count > 1 else ''}: "
    return head + "; ".join(problems) + "."


def _did_you_mean(loc: tuple[str, ...]) -> str:
    model: type[BaseModel] = TailorMindConfig
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
    return f"; did you mean '{'.'.join((*loc[:-1], close[0]))}'?" if close else ""
