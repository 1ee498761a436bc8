"""Stage ``eval``: TailorBench 1:99 reranking on the test split for each ranker, with 95% intervals.

One Ray Data pipeline over the refined users: the swapped profiles joined in (a fixed derangement, the
``profile_swapped`` control), every ranking request in one LLM step (scoring or chat, per
``profiling.rank_mode``), then an actor that turns the answers into each user's rank under every ranker
(``models.profiling.test_ranking``). ``RUN/eval/ranks.parquet/`` holds each user's ranks and taste spreads;
``metrics.json`` is computed from it in a task.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from jobs.llm_step import LIGHT, LLMStep
from jobs.pipeline import stage_main
from jobs.score_step import ScoreStep
from jobs.stage_runner import StageResult
from models.config import TailorMindConfig
from models.llm.rows import request_json, scoring_json
from models.profiling.test_ranking import (
    TEST_ROUND,
    TestRankers,
    eval_metrics,
    positional_warnings,
    ranker_metrics,
    test_depth,
    test_requests,
)
from runtime.artifacts import REFINED, cards_ref, hash_partitions, parquet_rows, priors_ref, taste_spread
from runtime.broadcast import mapping_of
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

log = logging.getLogger("tailormind.eval")
RANKS = "ranks.parquet"  # a folder of Parquet files


def requests_batch(batch: pa.Table, cards: Any, config: TailorMindConfig) -> pa.Table:
    """Each user's ranking requests (``test_requests``) and where each ranker's answers start."""
    lookup = mapping_of(cards, "item_id", "card")
    encode = scoring_json if config.profiling.rank_mode == "likelihood" else request_json
    asked, layouts = [], []
    for row in batch.to_pylist():
        requests, layout = test_requests(row, lookup, config)
        asked.append([encode(r) for r in requests])
        layouts.append(json.dumps(layout))
    table = batch.append_column("test_requests", pa.array(asked, pa.list_(pa.string())))
    return table.append_column("test_layout", pa.array(layouts, pa.string()))


def swap_profiles(users: Any, partitions: int) -> Any:
    """The refined users with ``swapped_profile``: the refined profile of their ``swap_user``."""
    partners = users.select_columns(["user_id", "profile_refined"]).rename_columns(
        {"user_id": "swap_user", "profile_refined": "swapped_profile"}
    )
    return users.join(partners, "left_outer", num_partitions=partitions, on=("swap_user",))


class RankerActor(TestRankers):
    """``TestRankers`` in a Ray Data actor: its cards and priors from the object store."""

    def __init__(
        self, cards: Any, priors: Any, cf_embeddings: str | None, catalogue: str | None, config: Any
    ) -> None:
        spread = (lambda vectors: taste_spread(catalogue, vectors)) if catalogue else None
        super().__init__(
            mapping_of(cards, "item_id", "card"),
            mapping_of(priors, "item_id", "prior"),
            cf_embeddings,
            spread,
            config,
        )


def evaluate_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``eval``: RUN/eval/metrics.json in the CONTRACT's format, and each user's ranks."""
    import ray
    import ray.data

    config = pipeline.config
    refined = pipeline.results["refine"].path / REFINED
    captions, priors_dir = pipeline.results["captions"].path, pipeline.results["priors"].path
    cf, catalogue = pipeline.results.get("cf"), pipeline.results.get("catalogue")
    likelihood = config.profiling.rank_mode == "likelihood"

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray, pipeline.runner.run_dir)
        cards = cards_ref(captions)
        users = ray.data.read_parquet(str(refined.resolve()))
        if likelihood and config.profiling.controls:
            users = swap_profiles(users, hash_partitions(parquet_rows(refined)))
        kwargs = {"cards": cards, "config": config}
        asked = users.map_batches(requests_batch, fn_kwargs=kwargs, batch_format="pyarrow", **LIGHT)
        ranker = config.llm.ranker
        step = ScoreStep("test", ranker) if likelihood else LLMStep("test", ranker, config.seed + TEST_ROUND)
        step(asked).map_batches(
            RankerActor,
            fn_constructor_kwargs={
                "cards": cards,
                "priors": priors_ref(priors_dir),
                "cf_embeddings": str((cf.path / "embeddings").resolve()) if cf is not None else None,
                "catalogue": str(catalogue.path.resolve()) if catalogue is not None else None,
                "config": config,
            },
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=1,
        ).write_parquet(str((out / RANKS).resolve()))
        depth = test_depth(config)
        task = ray.remote(ranker_metrics).options(**LIGHT)
        computed = ray.get(
            task.remote(str((out / RANKS).resolve()), config.seed, depth, config.llm, likelihood)
        )
        metrics = eval_metrics(computed, config)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        for warning in positional_warnings(metrics["rankers"], metrics["num_users"]):
            log.warning(warning)
        rankers = metrics["rankers"]
        summary = {name: {k: v for k, v in m.items() if k != "ci95"} for name, m in rankers.items()}
        return {**summary, "llm_calls": computed["llm_calls"], "fusion_weight": computed["fusion_weight"]}

    section = {"ranker": config.llm.ranker, "profiling": config.profiling, "seed": config.seed}
    inputs = [refined.parent, captions, priors_dir] + [r.path for r in (cf, catalogue) if r is not None]
    return pipeline.runner.run("eval", build, config=section, inputs=inputs)


if __name__ == "__main__":
    raise SystemExit(stage_main("eval", sys.argv[1:]))
