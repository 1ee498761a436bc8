"""Stage ``generate``: a personalised post with images (and clips) for each refined profile, with reflection.

Refined users stream through a ``map_batches`` actor that holds the diffusion pipelines, CLIP and MiniLM
(on ``generation.device``) and runs ``PostWriter`` for its batch; the writer's LLM steps go to the roles'
Serve deployments (or HTTP endpoints) through ``runtime.chat``, all of a batch's requests at once. Each
user's page is written by the actor; ``RUN/generate/posts.parquet/`` holds one summary row per user.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from jobs.llm_step import LIGHT
from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult
from models.config import TailorMindConfig
from models.generation.pages import index_pages, with_index_page, write_index, write_index_group, write_post
from models.generation.summary import post_spreads, summarise_posts, summary_table
from runtime.artifacts import POSTS, REFINED, cards_ref, hash_partitions, parquet_rows, taste_spread
from runtime.broadcast import mapping_of
from runtime.cluster import connect
from runtime.writing import (
    ensure_llm_roles,
    map_refined_users,
    post_writer,
    role_clients,
    user_brief,
    writer_roles,
)

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun


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
        """One summary row per user: page, versions, best score, errors (``summary_table``)."""
        briefs = [user_brief(row, self.cards) for row in batch.to_pylist()]
        posts = self.writer.write(briefs)
        calls = self.llm.take_calls()  # the batch's LLM calls, on its first row
        spreads = post_spreads(self.spread, batch, posts)
        pages = [write_post(self.out, post).relative_to(self.out).as_posix() for post in posts]
        return summary_table(posts, pages, calls, spreads)


def write_index_pages(out: Path) -> int:
    """The posts' index: pages of about ``INDEX_PAGE_SIZE`` users (by hash), written by Ray Data tasks, and
    its first page; returns the number of pages."""
    import ray.data

    rows = parquet_rows(out / POSTS)
    pages = index_pages(rows)
    ds = ray.data.read_parquet(str((out / POSTS).resolve()), columns=["user_id", "page"])
    paged = ds.map_batches(with_index_page, fn_kwargs={"pages": pages}, batch_format="pyarrow", **LIGHT)
    paged.groupby("index_page", num_partitions=hash_partitions(rows)).map_groups(
        write_index_group, fn_kwargs={"out": str(out.resolve()), "pages": pages}, batch_format="pyarrow"
    ).materialize()
    write_index(out, pages, rows)
    return pages


def generate_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``generate``: RUN/generate/<user>/{post.json,image*.png,video*.webm,index.html}."""
    import ray

    config = pipeline.config
    refined = pipeline.results["refine"].path / REFINED
    captions = pipeline.results["captions"].path
    catalogue = pipeline.results.get("catalogue")

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray, pipeline.runner.run_dir)
        ensure_llm_roles(config, writer_roles(config))
        map_refined_users(
            refined,
            config.generation.max_users,
            PostWriterActor,
            config,
            writer_roles(config),
            cards=cards_ref(captions),
            out=str(out.resolve()),
            catalogue=str(catalogue.path.resolve()) if catalogue is not None else None,
        ).write_parquet(str((out / POSTS).resolve()))
        pages = write_index_pages(out)
        task = ray.remote(summarise_posts).options(**LIGHT)
        summary = ray.get(task.remote(str((out / POSTS).resolve()), config.llm))
        return {**summary, "index_pages": pages}

    section = {
        "generation": config.generation,
        "llm": [getattr(config.llm, name) for name in writer_roles(config)],
        "seed": config.seed,
    }
    inputs = [refined.parent, captions] + ([catalogue.path] if catalogue is not None else [])
    return pipeline.runner.run("generate", build, config=section, inputs=inputs)


if __name__ == "__main__":
    raise SystemExit(stage_main("generate", sys.argv[1:]))
