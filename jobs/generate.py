"""Stage ``generate``: a personalised post with images (and clips) for each refined profile, with reflection.

Refined users stream through a ``map_batches`` actor that holds the diffusion pipelines, CLIP and MiniLM
(on ``generation.device``) and runs ``PostWriter`` for its batch; the writer's LLM steps go to the roles'
Serve deployments (or HTTP endpoints) through ``runtime.chat``, all of a batch's requests at once. Each
user's page is written by the actor; ``RUN/generate/posts.parquet/`` holds one summary row per user.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.broadcast import mapping_of
from jobs.catalogue import taste_spread
from jobs.llm_step import LIGHT, summed_tallies
from jobs.pipeline import stage_main
from jobs.profiles import cards_ref
from jobs.refine import PUBLISHED
from jobs.stage_runner import StageResult
from models.config import TailorMindConfig
from models.evaluation import finite_mean
from models.generation.pages import write_index, write_post
from models.generation.safety import JUDGE_ROLE, SafetyGate
from models.generation.writer import WRITER_ROLE, Complete, PostWriter, UserBrief
from models.llm.config import LLMConfig
from runtime.chat import RoleClients, chat_client
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

POSTS = "posts.parquet"  # a folder of Parquet files


def writer_roles(config: TailorMindConfig) -> tuple[str, ...]:
    """The LLM roles a post needs: the writer, and the judge when the safety gate checks the policy."""
    return (WRITER_ROLE, JUDGE_ROLE) if config.generation.safety.policy_check else (WRITER_ROLE,)


def role_clients(config: TailorMindConfig, names: tuple[str, ...], api_keys: dict[str, str]) -> RoleClients:
    """``complete(requests, role)`` over these roles' deployments or endpoints, counting the calls."""
    clients = {name: chat_client(getattr(config.llm, name), api_keys.get(name)) for name in names}
    return RoleClients(clients, config.seed)


def endpoint_keys(config: TailorMindConfig, names: tuple[str, ...]) -> dict[str, str]:
    """The driver's API keys of the HTTP roles among ``names`` (actors do not see its environment)."""
    roles = {name: getattr(config.llm, name) for name in names}
    return {name: os.environ.get(r.api_key_env, "") for name, r in roles.items() if r.backend == "http"}


def post_writer(config: TailorMindConfig, complete: Complete) -> PostWriter:
    """The writer with the configured diffusion, CLIP, embedding and safety models, its LLM calls to
    ``complete``."""
    from models.embedding import TextEmbedder
    from models.generation.diffusion import ImageGenerator, VideoGenerator
    from models.scoring.clip_score import CLIPScorer
    from models.scoring.safety_checker import ImageSafetyChecker

    gen = config.generation
    safety = gen.safety
    checker = (
        ImageSafetyChecker(safety.image_checker, device=gen.device, sensitivity=safety.image_sensitivity)
        if safety.image_checker is not None
        else None
    )
    return PostWriter(
        complete=complete,
        images=ImageGenerator.from_config(gen),
        scorer=CLIPScorer(gen.clip_model, device=gen.device),
        embedder=TextEmbedder(device=gen.device),
        num_images=gen.num_images,
        reflection_rounds=gen.reflection_rounds,
        seed=config.seed,
        videos=VideoGenerator.from_config(gen) if gen.num_videos else None,
        num_videos=gen.num_videos,
        video_score_frames=gen.video.score_frames,
        safety=SafetyGate.from_config(safety, complete, checker, gen.video.score_frames),
        safety_rewrites=safety.rewrites,
    )


def ensure_llm_roles(config: TailorMindConfig, names: tuple[str, ...]) -> None:
    """Start the Serve deployments of these roles (all but HTTP ones) before actors call them."""
    from runtime.llm import ensure_llm_deployment

    for name in names:
        role = getattr(config.llm, name)
        if role.backend != "http":
            ensure_llm_deployment(role)


def actor_resources(config: TailorMindConfig) -> dict[str, Any]:
    """One CPU, and a GPU when the generation models run on CUDA."""
    return {"num_cpus": 1, "num_gpus": 1 if config.generation.device.startswith("cuda") else 0}


def user_brief(row: dict[str, Any], cards: dict[str, str]) -> UserBrief:
    """A refined user as the writer sees them: profile, history cards and history + CF cards."""
    history = [cards[i] for i in row["history"]]
    return UserBrief(
        row["user_id"], row["profile_refined"], history, history + [cards[i] for i in row["cf_items"]]
    )


class PostWriterActor:
    """Writes the posts of a batch of users and their pages under ``out``."""

    def __init__(
        self, config: TailorMindConfig, cards: Any, out: str, api_keys: dict[str, str], catalogue: str | None
    ):
        from models.embedding import CardVectors

        self.llm = role_clients(config, writer_roles(config), api_keys)
        self.writer = post_writer(config, self.llm)
        self.cards = mapping_of(cards, "item_id", "card")
        self.out = Path(out)
        vectors = CardVectors(self.writer.embedder, self.cards)
        self.spread = taste_spread(catalogue, vectors) if catalogue is not None else None

    def __call__(self, batch: pa.Table) -> pa.Table:
        """One summary row per user: page, versions, best score, errors."""
        briefs = [user_brief(row, self.cards) for row in batch.to_pylist()]
        rows: list[dict[str, Any]] = []
        posts = self.writer.write(briefs)
        calls = self.llm.take_calls()  # the batch's LLM calls, on its first row
        spreads = self._spreads(batch, posts)
        for post, (history_spread, post_spread) in zip(posts, spreads, strict=True):
            page = write_post(self.out, post)
            best = post.versions[post.best].score if post.best >= 0 else None
            rows.append(
                {
                    "user_id": post.user_id,
                    "page": page.relative_to(self.out).as_posix(),
                    "versions": len(post.versions),
                    "best_score": best,
                    "errors": post.errors,
                    "refusal": post.refusal,
                    "safety_flags": post.flags,
                    "llm_calls": None if rows else calls,
                    "spread_history": history_spread,
                    "spread_post": post_spread,
                }
            )
        return pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA)

    def _spreads(self, batch: pa.Table, posts: list[Any]) -> list[tuple[float | None, float | None]]:
        """Taste spread (drift) of each user's history and of their best post's text (None: unmeasured)."""
        if self.spread is None:
            return [(None, None)] * len(posts)
        histories = dict(zip(batch["user_id"].to_pylist(), batch["history"].to_pylist(), strict=True))
        best = [post.versions[post.best] if post.best >= 0 else None for post in posts]
        texts = ["\n".join([v.title, v.body, *v.tags]) if v is not None else "" for v in best]
        of_history = [self.spread.of_items(histories[post.user_id]) for post in posts]
        of_post = self.spread.of_texts(texts).tolist()
        return [
            (a if np.isfinite(a) else None, b if np.isfinite(b) else None)
            for a, b in zip(of_history, of_post, strict=True)
        ]


SUMMARY_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("page", pa.string()),
        ("versions", pa.int64()),
        ("best_score", pa.float64()),
        ("errors", pa.list_(pa.string())),
        ("refusal", pa.string()),  # why the safety gate refused every version, else null
        ("safety_flags", pa.int64()),  # flags raised over all versions
        ("llm_calls", pa.string()),  # {role: [requests, failed, retries]} of the writer actor's batch
        ("spread_history", pa.float64()),  # taste spread of the history (models.profiling.drift)
        ("spread_post", pa.float64()),  # and of the best post's text
    ]
)


def index_and_summary(out: str, llm: LLMConfig) -> dict[str, Any]:
    """The index page over every post and the stage's counts (in a task: one short row per user)."""
    table = pq.read_table(Path(out) / POSTS)
    rows = table.to_pylist()
    write_index(Path(out), {row["user_id"]: Path(out) / row["page"] for row in rows})
    scores = [row["best_score"] for row in rows if row["best_score"] is not None]
    return {
        "users": len(rows),
        "failed": sum(1 for row in rows if row["best_score"] is None and row["refusal"] is None),
        "refused_by_safety": sum(1 for row in rows if row["refusal"] is not None),
        "safety_flags": sum(row["safety_flags"] for row in rows),
        "with_fallbacks": sum(1 for row in rows if row["errors"]),
        "mean_versions": sum(row["versions"] for row in rows) / max(1, len(rows)),
        "mean_best_score": sum(scores) / max(1, len(rows)),
        "llm_calls": summed_tallies([row["llm_calls"] for row in rows], llm, {}),
        "drift": {
            "history": finite_mean([row["spread_history"] for row in rows]),
            "posts": finite_mean([row["spread_post"] for row in rows]),
        },
    }


def generate_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``generate``: RUN/generate/<user>/{post.json,image*.png,video*.webm,index.html}."""
    import ray
    import ray.data

    config = pipeline.config
    refined = pipeline.results["refine"].path / PUBLISHED
    captions = pipeline.results["captions"].path
    catalogue = pipeline.results.get("catalogue")

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray, pipeline.runner.run_dir)
        ensure_llm_roles(config, writer_roles(config))
        users = ray.data.read_parquet(str(refined.resolve()))
        if config.generation.max_users is not None:
            users = users.limit(config.generation.max_users)
        users.map_batches(
            PostWriterActor,
            fn_constructor_kwargs={
                "config": config,
                "cards": cards_ref(captions),
                "out": str(out.resolve()),
                "api_keys": endpoint_keys(config, writer_roles(config)),
                "catalogue": str(catalogue.path.resolve()) if catalogue is not None else None,
            },
            batch_format="pyarrow",
            batch_size=config.generation.batch_size,
            compute=ray.data.ActorPoolStrategy(size=config.generation.workers),
            **actor_resources(config),
        ).write_parquet(str((out / POSTS).resolve()))
        return ray.get(ray.remote(index_and_summary).options(**LIGHT).remote(str(out.resolve()), config.llm))

    section = {
        "generation": config.generation,
        "llm": [getattr(config.llm, name) for name in writer_roles(config)],
        "seed": config.seed,
    }
    inputs = [refined.parent, captions] + ([catalogue.path] if catalogue is not None else [])
    return pipeline.runner.run("generate", build, config=section, inputs=inputs)


if __name__ == "__main__":
    raise SystemExit(stage_main("generate", sys.argv[1:]))
