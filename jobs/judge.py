"""Stage ``judge``: TailorBench content evaluation of the system, its ablations and the ground truth, blind.

Every method writes for the same users with the same seeds in one batched ``PostWriter`` run; each post
(and each user's test item, the ground truth) is scored by the same code: coherence in CLIP space against
the user's history and test item, and novelty, aesthetic and hallucination by the judge LLM, which never
sees the method and gets the posts in a seeded shuffled order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from jobs.generate import post_writer
from jobs.llm_pass import run_structured
from jobs.profiles import ProfilingInputs, profiling_inputs
from jobs.ray_cluster import connect
from jobs.stage_runner import StageResult
from models.config import TailorMindConfig
from models.data import load_dataset
from models.embedding import TextEmbedder
from models.evaluation import mean_with_ci
from models.generation.writer import GeneratedPost, UserBrief, split_groups
from models.judging.coherence import coherence, visual_coherence
from models.judging.judge import CatalogueFacts, PostView, judge_requests, judged_scores
from models.llm.prompts import JUDGE_FACTS, JUDGE_QUALITY
from models.media import MediaError, VideoClip, video_clip
from models.scoring.clip_score import CLIPScorer

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

METRICS = ("coherence", "novelty", "aesthetic", "hallucination")


def method_briefs(
    method: str, user_id: str, profiles: dict[str, str], history: list[str], evidence: list[str], generic: str
) -> UserBrief:
    """What one method writes from: the full system, or it without profile, RAG, reflection or refinement."""
    key = f"{method}/{user_id}"
    if method == "no_profile":
        return UserBrief(key, generic, history, evidence)
    if method == "no_refinement":
        return UserBrief(key, profiles["initial"], history, evidence)
    return UserBrief(
        key,
        profiles["refined"],
        history,
        evidence,
        use_exemplars=method != "no_rag",
        reflection_rounds=0 if method == "no_reflection" else None,
    )


def post_view(method: str, user_id: str, post: GeneratedPost, history: list[str], target: str) -> PostView:
    """The best version of a generated post as the judge sees it (empty when the writer failed)."""
    if post.best < 0:
        return PostView(method, user_id, "", [], history, target)
    best = post.versions[post.best]
    text = f"{best.title}\n{best.body}\n{' '.join('#' + tag for tag in best.tags)}"
    return PostView(method, user_id, text, list(best.images), history, target, list(best.videos))


def _item_media(
    item: dict[str, Any], resolve_uri: Any, frames: int
) -> tuple[list[Image.Image], list[VideoClip]]:
    """The readable images and videos of a catalogue item; unreadable files are left out."""
    images = []
    for uri in item.get("image_uris") or []:
        try:
            with Image.open(resolve_uri(uri)) as image:
                images.append(image.convert("RGB"))
        except OSError:  # unreadable or not an image
            continue  # a missing ground-truth image leaves a text-only ground truth
    videos = []
    for uri in item.get("video_uris") or []:
        try:
            videos.append(video_clip(resolve_uri(uri), frames))
        except MediaError:
            continue
    return images, videos


def _views(pipeline: PipelineRun, inputs: ProfilingInputs) -> list[PostView]:
    config = pipeline.config
    judge = config.judge
    initial = pq.read_table(pipeline.results["profiles"].path / "profile_v0.parquet").to_pylist()
    refined = pq.read_table(pipeline.results["refine"].path / "profiles.parquet").to_pylist()
    initial_text = {row["user_id"]: row["text"] for row in initial}
    dataset = load_dataset(pipeline.results["data"].path)
    items = dataset.items.to_pylist()
    row_of = {user_id: row for row, user_id in enumerate(inputs.user_ids)}
    users, briefs, context = [], [], {}
    for profile in refined[: judge.max_users]:
        user_id, row = profile["user_id"], row_of[profile["user_id"]]
        history = [inputs.cards[i] for i in inputs.cohort.history[row]]
        evidence = history + [inputs.cards[i] for i in inputs.recommended.get(user_id, [])]
        target = int(inputs.cohort.test_candidates[row, 0])
        context[user_id] = (history, target)
        users.append(user_id)
        profiles = {"initial": initial_text.get(user_id, ""), "refined": profile["profile_refined"]}
        for method in judge.methods:
            if method != "ground_truth":
                briefs.append(
                    method_briefs(method, user_id, profiles, history, evidence, judge.generic_profile)
                )
    posts = {post.user_id: post for post in post_writer(config).write(briefs)} if briefs else {}
    frames = config.generation.video.score_frames
    views = []
    for user_id in users:
        history, target = context[user_id]
        card = inputs.cards[target]
        for method in judge.methods:
            if method == "ground_truth":
                images, videos = _item_media(items[target], dataset.resolve_uri, frames)
                views.append(PostView(method, user_id, card, images, history, card, videos))
            else:
                views.append(post_view(method, user_id, posts[f"{method}/{user_id}"], history, card))
    return views


def _coherence(views: list[PostView], scorer: CLIPScorer, frames_per_clip: int) -> list[float]:
    """Each post's images and clips (text-only posts: the text) against its history and test item, in CLIP."""
    values = []
    for view in views:
        if not view.text:
            values.append(np.nan)
            continue
        reference = scorer.embed_texts([*view.history_cards, view.target_card]).cpu().numpy()
        visuals = view.visuals(frames_per_clip)
        if visuals:
            embedded = scorer.embed_images([frame for frames in visuals for frame in frames]).cpu().numpy()
            values.append(visual_coherence(split_groups(embedded, visuals), reference))
        else:
            values.append(coherence(scorer.embed_texts([view.text]).cpu().numpy(), reference))
    return values


def judge_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``judge``: RUN/judge/{metrics.json,scores.parquet}, one row per (method, user)."""
    config: TailorMindConfig = pipeline.config

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray)
        inputs = profiling_inputs(pipeline)
        views = _views(pipeline, inputs)
        device = config.generation.device
        scorer = CLIPScorer(config.generation.clip_model, device)
        coherence_values = _coherence(views, scorer, config.generation.video.score_frames)
        judged = [view for view in views if view.text]
        order = np.random.default_rng(config.seed).permutation(len(judged))  # blind, shuffled order
        shuffled = [judged[i] for i in order]
        catalogue = CatalogueFacts(inputs.cards, TextEmbedder(device=device), config.judge.fact_top_k)
        facts = catalogue.facts([view.text for view in shuffled])
        role = config.llm.judge
        requests = judge_requests(shuffled, facts, role.max_images_per_prompt)
        answers = run_structured(requests, role, seed=config.seed)
        rows: list[dict[str, Any]] = []
        for view, value in zip(views, coherence_values, strict=True):
            visual = bool(view.images or view.videos) and role.max_images_per_prompt > 0
            keys = (f"{view.key}|quality", f"{view.key}|facts")
            errors = [answer.error for key in keys if (answer := answers.get(key)) and answer.error]
            rows.append(
                {"method": view.method, "user_id": view.user_id, "coherence": value}
                | judged_scores(view, answers, visual)
                | {"judge_errors": "; ".join(errors) or None}
            )
        pq.write_table(pa.Table.from_pylist(rows), out / "scores.parquet")
        methods = {
            method: {
                metric: mean_with_ci([r[metric] for r in rows if r["method"] == method], seed=config.seed)
                for metric in METRICS
            }
            for method in config.judge.methods
        }
        failed = [a for a in answers.values() if a.error]
        metrics = {
            "methods": methods,
            "num_users": len({view.user_id for view in views}),
            "judge_requests": len(requests),
            "judge_failures": len(failed),
            "judge_retries": sum(a.attempts - 1 for a in answers.values()),
            "failed_posts": sum(1 for view in views if not view.text),
            "judge_model": role.model_source,
            "prompts": [JUDGE_QUALITY.key, JUDGE_FACTS.key],
        }
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return {k: v for k, v in metrics.items() if k != "methods"}

    section = {"judge": config.judge, "generation": config.generation, "llm": config.llm, "seed": config.seed}
    inputs = [pipeline.results[n].path for n in ("refine", "profiles", "captions", "data")]
    return pipeline.runner.run("judge", build, config=section, inputs=inputs)
