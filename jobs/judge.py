"""Stage ``judge``: TailorBench content evaluation of the system, its ablations and the ground truth, blind.

Refined users stream through a ``map_batches`` actor that runs ``TailorBench`` (``models.judging.bench``) on
its batch: every method's posts in one ``PostWriter`` run, then coherence in CLIP space and the judge LLM's
blind novelty, aesthetic and hallucination scores; its facts for hallucination are the catalogue cards nearest
to the post, whose vectors ``jobs.card_vectors`` computes once per card across runs and broadcasts to the
actors. ``RUN/judge/scores.parquet/`` has one row per (method, user); ``metrics.json`` is computed from it in
a task.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from jobs.card_vectors import catalogue_vectors
from jobs.llm_step import LIGHT
from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult
from models.config import TailorMindConfig
from models.judging.bench import TailorBench, judge_roles
from models.judging.judge import CatalogueFacts
from models.judging.scores import SCORE_SCHEMA, judge_metrics
from models.vectors import embedding_matrix
from runtime.artifacts import CAPTIONED_ITEMS, COHORT_ITEMS, REFINED, cards_ref, write_cards_of
from runtime.broadcast import broadcast_table, mapping_of, table_of
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

SCORES = "scores.parquet"  # a folder of Parquet files
MEDIA = ("image_uris", "video_uris")
FACT_CARDS = "fact_cards.parquet"  # with judge.fact_pool: cohort, the cards facts are retrieved from


class JudgeActor:
    """A ``map_batches`` actor: ``TailorBench`` over a batch of refined users, with its models in process."""

    def __init__(
        self,
        config: TailorMindConfig,
        catalogue: Any,
        cards: Any,
        media: Any,
        data_root: str,
        api_keys: dict[str, str],
    ):
        from models.embedding import TextEmbedder
        from models.scoring.clip_score import CLIPScorer

        self.cards = mapping_of(cards, "item_id", "card")
        self.llm = role_clients(config, judge_stage_roles(config), api_keys)
        writer = post_writer(config, self.llm)
        scorer = CLIPScorer(config.generation.clip_model, config.generation.device)
        vectors = table_of(catalogue)
        facts = CatalogueFacts(
            vectors["card"].to_pylist(),
            TextEmbedder(device=config.generation.device),
            config.judge.fact_top_k,
            embedding_matrix(vectors["vector"]),
        )
        self.bench = TailorBench(
            complete=self.llm,
            writer=writer,
            scorer=scorer,
            facts=facts,
            cards=self.cards,
            media={row["item_id"]: row for row in table_of(media).to_pylist()},
            data_root=data_root,
            settings=config.judge,
            max_images=config.llm.visual_judge.max_images_per_prompt,
            score_frames=config.generation.video.score_frames,
            seed=config.seed,
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        """One row per (method, user): the four metrics, judge errors, and the batch's judge counts."""
        users = batch.to_pylist()
        rows = self.bench.score(users, [user_brief(row, self.cards) for row in users])
        calls = self.llm.take_calls()  # the batch's writer and judge calls, on its first row
        return pa.Table.from_pylist(
            [row | {"llm_calls": None if i else calls} for i, row in enumerate(rows)], schema=SCORE_SCHEMA
        )


def judge_stage_roles(config: TailorMindConfig) -> tuple[str, ...]:
    """The roles of the judge stage: the writer's (its posts) and the judges' that get requests."""
    judges = judge_roles(config.llm.visual_judge.max_images_per_prompt)
    return tuple(dict.fromkeys((*writer_roles(config), *judges)))


def judge_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``judge``: RUN/judge/{metrics.json,scores.parquet/}, one row per (method, user)."""
    import ray

    config: TailorMindConfig = pipeline.config
    refined = pipeline.results["refine"].path / REFINED
    captions = pipeline.results["captions"].path
    data_dir = pipeline.results["data"].path
    cohort = pipeline.results["cohort"].path

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray, pipeline.runner.run_dir)
        ensure_llm_roles(config, judge_stage_roles(config))
        facts = str((captions / CAPTIONED_ITEMS).resolve())
        if config.judge.fact_pool == "cohort":  # the cohort's items only: no pass over the catalogue
            cohort_items, pool = str((cohort / COHORT_ITEMS).resolve()), str((out / FACT_CARDS).resolve())
            facts = ray.get(ray.remote(write_cards_of).options(**LIGHT).remote(facts, cohort_items, pool))
        media = broadcast_table(str((data_dir / "items.parquet").resolve()), ["item_id", *MEDIA])
        map_refined_users(
            refined,
            config.judge.max_users,
            JudgeActor,
            config,
            judge_stage_roles(config),
            catalogue=catalogue_vectors(
                facts,
                pipeline.runner.run_dir / "cache" / "card_vectors",
                config.generation.device,
                config.generation.workers,
            ),
            cards=cards_ref(captions),
            media=media,
            data_root=str(data_dir.resolve()),
        ).write_parquet(scores := str((out / SCORES).resolve()))
        metrics = ray.get(ray.remote(judge_metrics).options(**LIGHT).remote(scores, config))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return {k: v for k, v in metrics.items() if k != "methods"}

    section = {"judge": config.judge, "generation": config.generation, "llm": config.llm, "seed": config.seed}
    inputs = [refined.parent, captions, data_dir, cohort]
    return pipeline.runner.run("judge", build, config=section, inputs=inputs)


if __name__ == "__main__":
    raise SystemExit(stage_main("judge", sys.argv[1:]))
