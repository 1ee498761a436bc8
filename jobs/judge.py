"""Stage ``judge``: TailorBench content evaluation of the system, its ablations and the ground truth, blind.

Refined users stream through a ``map_batches`` actor: for its batch, every method (``models.judging
.ablations``) writes with the same seeds in one ``PostWriter`` run; each post and each user's test item
(the ground truth) is scored by the same code: coherence in CLIP space against the user's history and test
item, and novelty, aesthetic and hallucination by the judge LLM, which never sees the method and gets the
batch's posts in a seeded shuffled order; its facts for hallucination are the catalogue cards nearest to the
post, whose vectors ``jobs.card_vectors`` computes once per card across runs and broadcasts to the actors.
``RUN/judge/scores.parquet/`` has one row per (method, user); ``metrics.json`` is computed from it in a task.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from jobs.broadcast import broadcast_table, mapping_of, table_of
from jobs.captions import ITEMS
from jobs.card_vectors import catalogue_vectors
from jobs.generate import (
    actor_resources,
    endpoint_keys,
    ensure_llm_roles,
    post_writer,
    role_clients,
    user_brief,
    writer_roles,
)
from jobs.llm_step import LIGHT, summed_tallies
from jobs.pipeline import stage_main
from jobs.refine import PUBLISHED
from jobs.stage_runner import StageResult
from jobs.topk import embedding_matrix
from models.config import TailorMindConfig
from models.data.loader import resolve_media_uri
from models.evaluation import mean_with_ci
from models.generation.writer import split_groups
from models.judging.ablations import method_briefs, post_view
from models.judging.coherence import coherence, visual_coherence
from models.judging.judge import CatalogueFacts, PostView, judge_requests, judged_scores, shows_images
from models.llm.prompts import JUDGE_FACTS, JUDGE_QUALITY
from models.media import MediaError, VideoClip, video_clip
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

METRICS = ("coherence", "novelty", "aesthetic", "hallucination")
SCORES = "scores.parquet"  # a folder of Parquet files


def item_media(
    item: dict[str, Any], data_root: str, frames: int
) -> tuple[list[Image.Image], list[VideoClip]]:
    """The readable images and videos of a catalogue item; unreadable files are left out."""
    images = []
    for uri in item.get("image_uris") or []:
        try:
            with Image.open(resolve_media_uri(data_root, uri)) as image:
                images.append(image.convert("RGB"))
        except OSError:  # unreadable or not an image
            continue  # a missing ground-truth image leaves a text-only ground truth
    videos = []
    for uri in item.get("video_uris") or []:
        try:
            videos.append(video_clip(resolve_media_uri(data_root, uri), frames))
        except MediaError:
            continue
    return images, videos


class JudgeActor:
    """Writes every method's posts for a batch of users, then scores them and the ground truth blind."""

    def __init__(
        self,
        config: TailorMindConfig,
        catalogue: Any,
        media: Any,
        data_root: str,
        api_keys: dict[str, str],
    ):
        from models.embedding import TextEmbedder
        from models.scoring.clip_score import CLIPScorer

        self.config = config
        self.cards = mapping_of(catalogue, "item_id", "card")
        media_table = table_of(media)
        self.media = {row["item_id"]: row for row in media_table.to_pylist()}
        self.data_root = data_root
        self.llm = role_clients(config, judge_stage_roles(config), api_keys)
        self.writer = post_writer(config, self.llm)
        self.scorer = CLIPScorer(config.generation.clip_model, config.generation.device)
        vectors = table_of(catalogue)
        self.catalogue = CatalogueFacts(
            vectors["card"].to_pylist(),
            TextEmbedder(device=config.generation.device),
            config.judge.fact_top_k,
            embedding_matrix(vectors["vector"]),
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        """One row per (method, user): the four metrics, judge errors, and the batch's judge counts."""
        views = self._views(batch.to_pylist())
        values = self._coherence(views)
        judged = [view for view in views if view.text]
        order = np.random.default_rng(self.config.seed).permutation(len(judged))  # blind, shuffled order
        shuffled = [judged[i] for i in order]
        facts = self.catalogue.facts([view.text for view in shuffled])
        max_images = self.config.llm.visual_judge.max_images_per_prompt
        requests = judge_requests(shuffled, facts, max_images)
        visual = [r for r in requests if shows_images(r)]
        answers = {
            **(self.llm([r for r in requests if not shows_images(r)], "judge") if requests else {}),
            **(self.llm(visual, "visual_judge") if visual else {}),
        }
        calls = self.llm.take_calls()  # the batch's writer and judge calls, on its first row
        rows: list[dict[str, Any]] = []
        for view, value in zip(views, values, strict=True):
            rated_visually = bool(view.images or view.videos) and max_images > 0
            keys = (f"{view.key}|quality", f"{view.key}|facts")
            asked = [answers[key] for key in keys if key in answers]
            errors = [answer.error for answer in asked if answer.error]
            rows.append(
                {"method": view.method, "user_id": view.user_id, "coherence": value}
                | judged_scores(view, answers, rated_visually)
                | {
                    "judge_errors": "; ".join(errors) or None,
                    "judge_requests": len(asked),
                    "judge_failures": len(errors),
                    "judge_retries": sum(answer.attempts - 1 for answer in asked),
                    "failed_post": not view.text,
                    "llm_calls": None if rows else calls,
                }
            )
        return pa.Table.from_pylist(rows, schema=SCORE_SCHEMA)

    def _views(self, users: list[dict[str, Any]]) -> list[PostView]:
        judge = self.config.judge
        briefs = []
        for row in users:
            brief = user_brief(row, self.cards)
            profiles = {"initial": row["profile_initial"], "refined": row["profile_refined"]}
            briefs += [
                method_briefs(
                    method,
                    row["user_id"],
                    profiles,
                    brief.history_cards,
                    brief.exemplar_cards,
                    judge.generic_profile,
                )
                for method in judge.methods
                if method != "ground_truth"
            ]
        posts = {post.user_id: post for post in self.writer.write(briefs)} if briefs else {}
        frames = self.config.generation.video.score_frames
        views = []
        for row in users:
            user_id, target = row["user_id"], row["test_candidates"][0]
            history, card = [self.cards[i] for i in row["history"]], self.cards[target]
            for method in judge.methods:
                if method == "ground_truth":
                    images, videos = item_media(self.media[target], self.data_root, frames)
                    views.append(PostView(method, user_id, card, images, history, card, videos))
                else:
                    views.append(post_view(method, user_id, posts[f"{method}/{user_id}"], history, card))
        return views

    def _coherence(self, views: list[PostView]) -> list[float]:
        """Each post's images and clips (text-only posts: the text) against its history and test item."""
        frames_per_clip = self.config.generation.video.score_frames
        values = []
        for view in views:
            if not view.text:
                values.append(np.nan)
                continue
            reference = self.scorer.embed_texts([*view.history_cards, view.target_card]).cpu().numpy()
            visuals = view.visuals(frames_per_clip)
            if visuals:
                flat = [frame for frames in visuals for frame in frames]
                embedded = self.scorer.embed_images(flat).cpu().numpy()
                values.append(visual_coherence(split_groups(embedded, visuals), reference))
            else:
                values.append(coherence(self.scorer.embed_texts([view.text]).cpu().numpy(), reference))
        return values


SCORE_SCHEMA = pa.schema(
    [
        ("method", pa.string()),
        ("user_id", pa.string()),
        *((metric, pa.float64()) for metric in METRICS),
        ("judge_errors", pa.string()),
        ("judge_requests", pa.int64()),
        ("judge_failures", pa.int64()),
        ("judge_retries", pa.int64()),
        ("failed_post", pa.bool_()),
        ("llm_calls", pa.string()),  # {role: [requests, failed, retries]} of the judge actor's batch
    ]
)
JUDGE_ROLES = ("judge", "visual_judge")


def judge_stage_roles(config: TailorMindConfig) -> tuple[str, ...]:
    """The roles of the judge stage: the writer's (its posts) and the judges'."""
    return tuple(dict.fromkeys((*writer_roles(config), *JUDGE_ROLES)))


def judge_metrics(scores: str, config: TailorMindConfig) -> dict[str, Any]:
    """Per method and metric: mean, 95% interval and n; judge failures and retries (in a task)."""
    rows = pq.read_table(scores).to_pylist()
    methods = {
        method: {
            metric: mean_with_ci([r[metric] for r in rows if r["method"] == method], seed=config.seed)
            for metric in METRICS
        }
        for method in config.judge.methods
    }
    return {
        "methods": methods,
        "num_users": len({row["user_id"] for row in rows}),
        "judge_requests": sum(row["judge_requests"] for row in rows),
        "judge_failures": sum(row["judge_failures"] for row in rows),
        "judge_retries": sum(row["judge_retries"] for row in rows),
        "failed_posts": sum(1 for row in rows if row["failed_post"]),
        "judge_model": config.llm.judge.model_source,
        "visual_judge_model": config.llm.visual_judge.model_source,
        "llm_calls": summed_tallies([row["llm_calls"] for row in rows], config.llm, {}),
        "prompts": [JUDGE_QUALITY.key, JUDGE_FACTS.key],
    }


def judge_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``judge``: RUN/judge/{metrics.json,scores.parquet/}, one row per (method, user)."""
    import ray
    import ray.data

    config: TailorMindConfig = pipeline.config
    refined = pipeline.results["refine"].path / PUBLISHED
    captions = pipeline.results["captions"].path
    data_dir = pipeline.results["data"].path

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray, pipeline.runner.run_dir)
        ensure_llm_roles(config, judge_stage_roles(config))
        users = ray.data.read_parquet(str(refined.resolve()))
        if config.judge.max_users is not None:
            users = users.limit(config.judge.max_users)
        media = broadcast_table(
            str((data_dir / "items.parquet").resolve()), ["item_id", "image_uris", "video_uris"]
        )
        users.map_batches(
            JudgeActor,
            fn_constructor_kwargs={
                "api_keys": endpoint_keys(config, judge_stage_roles(config)),
                "config": config,
                "catalogue": catalogue_vectors(
                    str((captions / ITEMS).resolve()),
                    pipeline.runner.run_dir / "cache" / "card_vectors",
                    config.generation.device,
                    config.generation.workers,
                ),
                "media": media,
                "data_root": str(data_dir.resolve()),
            },
            batch_format="pyarrow",
            batch_size=config.generation.batch_size,
            compute=ray.data.ActorPoolStrategy(size=config.generation.workers),
            **actor_resources(config),
        ).write_parquet(str((out / SCORES).resolve()))
        metrics = ray.get(
            ray.remote(judge_metrics).options(**LIGHT).remote(str((out / SCORES).resolve()), config)
        )
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return {k: v for k, v in metrics.items() if k != "methods"}

    section = {"judge": config.judge, "generation": config.generation, "llm": config.llm, "seed": config.seed}
    inputs = [refined.parent, captions, data_dir]
    return pipeline.runner.run("judge", build, config=section, inputs=inputs)


if __name__ == "__main__":
    raise SystemExit(stage_main("judge", sys.argv[1:]))
