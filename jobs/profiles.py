"""Stage ``profiles``: each cohort user's initial preference profile (paper eq. 9) from history + CF items.

Cohort rows stream through one Ray Data pipeline: the evidence prompt (item cards from the captions
stage), the profiler step, the parsed profile. ``RUN/profiles/profile_v0.parquet/`` keeps the cohort's
columns beside the profile, so later stages read one artifact per user. Cold-start users (the cohort's
``cold_start.parquet``) go through the same steps with the catalogue's curated default in place of CF
items, into ``RUN/profiles/cold_start.parquet/`` (they have nothing held out, so refinement skips them).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from jobs.llm_step import LIGHT, LLMStep
from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult
from models.config import TailorMindConfig
from models.llm.prompts import PROFILE
from models.profiling.catalogue import Catalogue
from models.profiling.initial import parse_batch, profile_requests, profiles_summary
from runtime.artifacts import (
    CATALOGUE_CLUSTERS,
    COHORT_COLD_START,
    COHORT_USERS,
    COLD_START_PROFILES,
    PROFILES,
    cards_ref,
    facts_ref,
    parquet_rows,
)
from runtime.broadcast import mapping_of
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun


def profile_batch(
    batch: pa.Table, cards: Any, facts: Any, evidence_chars: int, default_cards: list[str] | None = None
) -> pa.Table:
    """``profile_requests`` of a batch, over the broadcast item cards and item facts."""
    titles, tags, clusters = (mapping_of(facts, "item_id", c) for c in ("title", "tags", "cluster"))
    lookup = mapping_of(cards, "item_id", "card")
    return profile_requests(batch, lookup, titles, tags, clusters, evidence_chars, default_cards)


def profiles_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``profiles``: RUN/profiles/profile_v0.parquet/ (cohort columns + profile)."""
    import ray

    config = pipeline.config
    cohort = pipeline.results["cohort"].path
    captions = pipeline.results["captions"].path

    catalogue = pipeline.results.get("catalogue")  # absent when a caller runs the stages without it

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray, pipeline.runner.run_dir)
        cards = cards_ref(captions)
        facts = facts_ref(cohort, catalogue.path if catalogue is not None else None)
        curated = (
            Catalogue.read(catalogue.path / CATALOGUE_CLUSTERS, config.coldstart).default()
            if catalogue is not None
            else []
        )
        task = ray.remote(profiles_summary).options(**LIGHT)
        summaries: dict[str, dict[str, Any]] = {}
        for users, written, default in (
            (COHORT_USERS, PROFILES, None),
            (COHORT_COLD_START, COLD_START_PROFILES, curated),
        ):
            source = cohort / users
            if parquet_rows(source):  # a dataset may have no cold-start users
                path = str((out / written).resolve())
                profile_users(str(source.resolve()), cards, facts, default, config).write_parquet(path)
                summaries[written] = ray.get(task.remote(path, config.llm))
        summary = summaries.get(PROFILES, {"users": 0, "failed": 0, "llm_calls": {}})
        cold_start = summaries.get(COLD_START_PROFILES, {"users": 0, "failed": 0, "llm_calls": {}})
        return {**summary, "cold_start": cold_start, "prompt": PROFILE.key}

    section = {
        "profiler": config.llm.profiler,
        "evidence_chars": config.profiling.evidence_chars,
        "default": config.coldstart.model_dump(include={"default_clusters", "default_items_per_cluster"}),
    }
    return pipeline.runner.run(
        "profiles",
        build,
        config={**section, "seed": config.seed},
        inputs=[cohort, captions] + ([catalogue.path] if catalogue is not None else []),
    )


def profile_users(
    users: str, cards: Any, facts: Any, default: list[str] | None, config: TailorMindConfig
) -> Any:
    """The lazy Dataset of the users in Parquet ``users`` with their parsed initial profiles."""
    import ray.data

    asked = ray.data.read_parquet(users).map_batches(
        profile_batch,
        fn_kwargs={
            "cards": cards,
            "facts": facts,
            "evidence_chars": config.profiling.evidence_chars,
            "default_cards": default,
        },
        batch_format="pyarrow",
        **LIGHT,
    )
    answered = LLMStep("profile", config.llm.profiler, config.seed)(asked)
    return answered.map_batches(parse_batch, batch_format="pyarrow", **LIGHT)


if __name__ == "__main__":
    raise SystemExit(stage_main("profiles", sys.argv[1:]))
