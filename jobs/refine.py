"""Stage ``refine``: textual-gradient refinement (``models.profiling.refiner``), all users round by round.

Each round is one Ray Data pipeline over the users still active: rank -> gradient -> update, three LLM
steps chained in one pass (a user who stops asks the later steps nothing), ending in the round's
checkpoint ``round_<r>/`` (written to a temporary folder, then renamed). A killed run resumes after its
last finished round. ``RUN/refine/profiles.parquet/`` holds each user's initial and best profile, the
validation rank of every round, each round's profile text, token counts and errors. The test split is
never read here.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from jobs.broadcast import broadcast_table, mapping_of
from jobs.feedback import EVIDENCE
from jobs.llm_step import LIGHT, LLMStep, request_json, row_answers, step_columns, summed_tallies, tally
from jobs.pipeline import stage_main
from jobs.profiles import PROFILES, cards_ref
from jobs.stage_runner import StageResult
from models.config import TailorMindConfig
from models.llm.config import LLMConfig
from models.llm.structured import summed_counts
from models.profiling.refiner import ProfileRefiner, refined_profile
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

PUBLISHED = "profiles.parquet"  # a folder of Parquet files
STEPS = ("rank", "gradient", "update")
TOKENS = ("prompt_tokens", "generated_tokens", "cached_tokens")  # per user, one count per round


def _refiner(cards: Any, config: TailorMindConfig) -> ProfileRefiner:
    lookup = mapping_of(cards, "item_id", "card")
    catalogue = list(lookup) if config.profiling.valid_negatives == "resample" else []
    return ProfileRefiner(config.profiling, lookup, config.seed, catalogue)


def start_batch(batch: pa.Table, cards: Any, feedback: Any, config: TailorMindConfig) -> pa.Table:
    """Initial profiles (with the cohort's columns) as refinement states, with each user's feedback."""
    import json

    refiner = _refiner(cards, config)
    evidence = mapping_of(feedback, "user_id", "feedback")
    rows = []
    for row in batch.to_pylist():
        state = refiner.start(row["user_id"], json.loads(row["preferences"]), row["valid_candidates"])
        state |= {counted: [] for counted in TOKENS} | {"llm_calls": None}
        state["feedback"] = evidence.get(row["user_id"], "")
        rows.append({**row, **state})
    return _table(rows, batch.schema)


def rank_batch(batch: pa.Table, cards: Any, config: TailorMindConfig, round_index: int) -> pa.Table:
    """The ranking requests of each user (one per shuffle)."""
    refiner = _refiner(cards, config)
    rows = batch.to_pylist()
    asked = [
        [request_json(r) for r in refiner.rank_requests(row, round_index, row["seen_items"])] for row in rows
    ]
    return _table(rows, batch.schema).append_column("rank_requests", pa.array(asked, pa.list_(pa.string())))


def gradient_batch(batch: pa.Table, cards: Any, config: TailorMindConfig, round_index: int) -> pa.Table:
    """Ranks applied; the gradient request of each user who goes on."""
    refiner = _refiner(cards, config)
    rows = batch.to_pylist()
    asked = []
    for row in rows:
        refiner.apply_ranking(row, row_answers(row, "rank"), round_index)
        asked.append([request_json(r) for r in refiner.gradient_requests(row, round_index)])
    table = _table(rows, batch.schema)
    return table.append_column("gradient_requests", pa.array(asked, pa.list_(pa.string())))


def update_batch(batch: pa.Table, cards: Any, config: TailorMindConfig, round_index: int) -> pa.Table:
    """The update request of each user whose gradient came back."""
    refiner = _refiner(cards, config)
    rows = batch.to_pylist()
    asked = [
        [request_json(r) for r in refiner.update_requests(row, row_answers(row, "gradient"), round_index)]
        for row in rows
    ]
    table = _table(rows, batch.schema)
    return table.append_column("update_requests", pa.array(asked, pa.list_(pa.string())))


def finish_batch(batch: pa.Table, cards: Any, config: TailorMindConfig, round_index: int) -> pa.Table:
    """Updates applied; the round's token counts recorded; the steps' columns dropped."""
    refiner = _refiner(cards, config)
    rows = batch.to_pylist()
    for row in rows:
        refiner.apply_update(row, row_answers(row, "update"), round_index)
        for counted in TOKENS:  # this round's, summed over its steps
            row[counted] = [*row[counted], summed_counts(row[f"{step}_{counted}"] for step in STEPS)]
        row["llm_calls"] = tally(row, STEPS, row.get("llm_calls"))
    step_names = {name for step in STEPS for name in step_columns(step)}
    schema = pa.schema([f for f in batch.schema if f.name not in step_names])
    return _table(rows, schema)


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows back to Arrow: the batch's columns with their own types, the state columns with theirs."""
    fields = [pa.field(f.name, _STATE_TYPES.get(f.name, f.type)) for f in schema]
    new = [pa.field(name, kind) for name, kind in _STATE_TYPES.items() if name not in schema.names]
    return pa.Table.from_pylist(rows, schema=pa.schema([*fields, *new]))


_STATE_TYPES = {
    "valid_candidates": pa.list_(pa.string()),
    "preferences": pa.string(),
    "profile": pa.string(),
    "profile_initial": pa.string(),
    "best_preferences": pa.string(),
    "best_rank": pa.int64(),
    "best_round": pa.int64(),
    "valid_ranks": pa.list_(pa.int64()),
    "round_profiles": pa.list_(pa.string()),
    "ranked_first": pa.list_(pa.int64()),
    "errors": pa.list_(pa.string()),
    "active": pa.bool_(),
    "prompt_tokens": pa.list_(pa.int64()),
    "generated_tokens": pa.list_(pa.int64()),
    "cached_tokens": pa.list_(pa.int64()),  # null in a round whose engine did not report its prefix cache
    "llm_calls": pa.string(),  # {step: [requests, failed, retries]}, summed over rounds
    "feedback": pa.string(),  # what the user did with earlier posts (the feedback stage's evidence)
}


def refine_rounds(
    profiles: Path, cards: Any, feedback: Any, config: TailorMindConfig, work: Path
) -> list[Path]:
    """Run (or resume) the rounds into ``work/round_<r>/``; returns the finished round folders."""
    import ray.data

    rounds = [work / f"round_{r}" for r in range(config.profiling.rounds + 1)]
    for round_index, folder in enumerate(rounds):
        if folder.is_dir():
            continue  # finished before a restart
        if round_index == 0:
            state = ray.data.read_parquet(str(profiles.resolve())).map_batches(
                start_batch,
                fn_kwargs={"cards": cards, "feedback": feedback, "config": config},
                batch_format="pyarrow",
                **LIGHT,
            )
        else:
            state = ray.data.read_parquet(str(rounds[round_index - 1].resolve())).map_batches(
                active_rows, batch_format="pyarrow", **LIGHT
            )
            if state.count() == 0:
                return rounds[:round_index]
        kwargs = {"cards": cards, "config": config, "round_index": round_index}
        seed = config.seed + round_index
        for step, prepare in (("rank", rank_batch), ("gradient", gradient_batch), ("update", update_batch)):
            state = state.map_batches(prepare, fn_kwargs=kwargs, batch_format="pyarrow", **LIGHT)
            role = config.llm.ranker if step == "rank" else config.llm.optimizer
            state = LLMStep(step, role, seed)(state)
        state = state.map_batches(finish_batch, fn_kwargs=kwargs, batch_format="pyarrow", **LIGHT)
        tmp = work / f".round_{round_index}.tmp-{uuid.uuid4().hex[:8]}"
        state.write_parquet(str(tmp.resolve()))
        tmp.rename(folder)  # the round's checkpoint appears whole or not at all
    return rounds


def active_rows(batch: pa.Table) -> pa.Table:
    """The users still refining (a batch filter: a row filter would re-infer the columns' types)."""
    return batch.filter(batch["active"])


def publish_batch(batch: pa.Table) -> pa.Table:
    """Finished users (those that stopped in this round's folder) as published profiles.

    The cohort's columns travel along, so later stages read one artifact per user; the test candidates
    were carried through the rounds but never shown to the LLM.
    """
    rows = [
        refined_profile(row) | {name: row[name] for name in _CARRIED}
        for row in batch.to_pylist()
        if not row["active"]
    ]
    return pa.Table.from_pylist(rows, schema=PUBLISHED_SCHEMA)


PUBLISHED_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("profile_initial", pa.string()),
        ("profile_refined", pa.string()),
        ("preferences_refined", pa.string()),
        ("best_round", pa.int64()),
        ("valid_ranks", pa.list_(pa.int64())),
        ("round_profiles", pa.list_(pa.string())),
        ("errors", pa.list_(pa.string())),
        ("prompt_tokens", pa.list_(pa.int64())),  # per round
        ("generated_tokens", pa.list_(pa.int64())),
        ("cached_tokens", pa.list_(pa.int64())),
        ("history", pa.list_(pa.string())),  # the cohort's columns that eval, generate and judge read
        ("cf_items", pa.list_(pa.string())),
        ("test_candidates", pa.list_(pa.string())),
        ("llm_calls", pa.string()),
    ]
)
_CARRIED = (*TOKENS, "history", "cf_items", "test_candidates", "llm_calls")
STEP_ROLES = {"rank": "ranker", "gradient": "optimizer", "update": "optimizer"}


def summarise(published: str, llm: LLMConfig) -> dict[str, Any]:
    """Validation-rank summary of the published profiles (read in a task: one small column per user)."""
    import pyarrow.parquet as pq

    table = pq.read_table(published, columns=["valid_ranks", "llm_calls", *TOKENS])
    ranks = table["valid_ranks"].combine_chunks()
    rounds = list_positions(ranks)
    values = ranks.flatten().to_numpy(zero_copy_only=False)
    initial = values[rounds == 0]
    selected = np.minimum.reduceat(values, np.flatnonzero(rounds == 0)) if len(initial) else initial
    return {
        "users": len(ranks),
        "mean_initial_valid_rank": float(initial.mean()) if len(initial) else None,
        "mean_selected_valid_rank": float(selected.mean()) if len(selected) else None,
        "selected_on": "validation: each user keeps the profile with the best validation rank, so "
        "mean_selected_valid_rank is optimistic; the eval stage measures on the test split",
        "stopped_at_rank_1": int((selected == 0).sum()),
        "llm_calls": summed_tallies(table["llm_calls"].to_pylist(), llm, STEP_ROLES),
        "tokens_per_round": tokens_per_round(table),
    }


def list_positions(lists: pa.ListArray) -> np.ndarray:
    """Each flattened value's position in its own list (0 for a list's first value)."""
    offsets = lists.offsets.to_numpy()
    lengths = np.diff(offsets)
    return np.arange(offsets[-1] - offsets[0]) - np.repeat(offsets[:-1] - offsets[0], lengths)


def tokens_per_round(table: pa.Table) -> list[dict[str, Any]]:
    """Per refinement round over the users in it: prompt, generated and prefix-cache-served tokens, and the
    cache's hit rate (None where the engine did not report it)."""
    rounds = list_positions(table["prompt_tokens"].combine_chunks())  # the counts' lists have equal lengths
    users = np.bincount(rounds)
    per_round: dict[str, list[int | None]] = {}
    for name in TOKENS:
        counts = table[name].combine_chunks().flatten()
        sums = np.bincount(rounds, counts.fill_null(0).to_numpy(zero_copy_only=False), len(users))
        unreported = np.bincount(rounds, counts.is_null().to_numpy(zero_copy_only=False), len(users))
        per_round[name] = [
            None if missing else int(total) for total, missing in zip(sums, unreported, strict=True)
        ]
    summary = []
    for index, in_round in enumerate(users):
        totals = {name: counts[index] for name, counts in per_round.items()}
        prompt, cached = totals["prompt_tokens"] or 0, totals["cached_tokens"]
        hit_rate = cached / prompt if cached is not None and prompt else None
        summary.append({"round": index, "users": int(in_round), **totals, "prefix_cache_hit_rate": hit_rate})
    return summary


def refine_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``refine``: RUN/refine/round_<r>/ checkpoints and RUN/refine/profiles.parquet/."""
    import ray
    import ray.data

    config = pipeline.config
    profiles = pipeline.results["profiles"].path / PROFILES
    captions = pipeline.results["captions"].path
    evidence = pipeline.results["feedback"].path / EVIDENCE

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray, pipeline.runner.run_dir)
        feedback = broadcast_table(str(evidence.resolve()), ["user_id", "feedback"])
        rounds = refine_rounds(profiles, cards_ref(captions), feedback, config, out)
        published = out / PUBLISHED
        if published.exists():  # left by a run killed while publishing
            shutil.rmtree(published)
        finished = ray.data.read_parquet([str(r.resolve()) for r in rounds])
        finished.map_batches(publish_batch, batch_format="pyarrow", **LIGHT).write_parquet(
            str(published.resolve())
        )
        summary = ray.get(ray.remote(summarise).options(**LIGHT).remote(str(published.resolve()), config.llm))
        return {**summary, "rounds": config.profiling.rounds, "rounds_run": len(rounds)}

    section = {
        "llm": [config.llm.ranker, config.llm.optimizer],
        "profiling": config.profiling,
        "seed": config.seed,
    }
    inputs = [pipeline.results[name].path for name in ("profiles", "captions", "feedback")]
    return pipeline.runner.run("refine", build, config=section, inputs=inputs, resumable=True)


if __name__ == "__main__":
    raise SystemExit(stage_main("refine", sys.argv[1:]))
