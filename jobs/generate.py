"""Stage ``generate``: a personalised post with images (and clips) for each refined profile, with reflection.

LLM steps run as structured passes over all users at once (the same Serve deployments as profiling); the
diffusion pipelines, CLIP and MiniLM run in this job's process on ``generation.device``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from jobs.llm_pass import run_structured
from jobs.profiles import profiling_inputs
from jobs.ray_cluster import connect
from jobs.stage_runner import StageResult
from models.config import TailorMindConfig
from models.embedding import TextEmbedder
from models.generation.diffusion import ImageGenerator, VideoGenerator
from models.generation.pages import write_index, write_post
from models.generation.writer import PostWriter, UserBrief
from models.scoring.clip_score import CLIPScorer

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun


def post_writer(config: TailorMindConfig) -> PostWriter:
    """The writer with the configured image (and video) diffusion, CLIP and embedding models and LLM roles."""
    gen = config.generation
    return PostWriter(
        complete=lambda requests, role: run_structured(requests, getattr(config.llm, role), seed=config.seed),
        images=ImageGenerator.from_config(gen),
        scorer=CLIPScorer(gen.clip_model, device=gen.device),
        embedder=TextEmbedder(device=gen.device),
        num_images=gen.num_images,
        reflection_rounds=gen.reflection_rounds,
        seed=config.seed,
        videos=VideoGenerator.from_config(gen) if gen.num_videos else None,
        num_videos=gen.num_videos,
        video_score_frames=gen.video.score_frames,
    )


def generate_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``generate``: RUN/generate/<user>/{post.json,image*.png,video*.webm,index.html}."""
    config = pipeline.config

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray)
        inputs = profiling_inputs(pipeline)
        refined = pq.read_table(pipeline.results["refine"].path / "profiles.parquet").to_pylist()
        row_of = {user_id: row for row, user_id in enumerate(inputs.user_ids)}
        briefs = []
        for profile in refined[: config.generation.max_users]:
            row = row_of[profile["user_id"]]
            history = [inputs.cards[i] for i in inputs.cohort.history[row]]
            recommended = [inputs.cards[i] for i in inputs.recommended.get(profile["user_id"], [])]
            briefs.append(
                UserBrief(profile["user_id"], profile["profile_refined"], history, history + recommended)
            )
        posts = post_writer(config).write(briefs)
        pages = {post.user_id: write_post(out, post) for post in posts}
        write_index(out, pages)
        return {
            "users": len(posts),
            "failed": sum(1 for p in posts if p.best < 0),
            "mean_versions": sum(len(p.versions) for p in posts) / max(1, len(posts)),
            "mean_best_score": sum(p.versions[p.best].score for p in posts if p.best >= 0)
            / max(1, len(posts)),
        }

    section = {
        "generation": config.generation,
        "llm": [config.llm.profiler, config.llm.optimizer],
        "seed": config.seed,
    }
    inputs = [pipeline.results[n].path for n in ("refine", "captions", "data")]
    return pipeline.runner.run("generate", build, config=section, inputs=inputs)
