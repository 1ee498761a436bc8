"""Profiling quality with real weights: SmolLM2 profiles against simple rankers on MovieLens (1:99, test).

The pipeline runs up to ``eval`` on MovieLens latest-small (item cards from titles, genres and tags; no VLM)
with SmolLM2-135M-Instruct as profiler, ranker and optimizer; then, for the same users and the same 100
candidates each: random (analytic), most popular (train interactions), MiniLM embedding, CF, the initial and
the refined profile, and the paper's evidence ablations (a profile written without the CF items, and one
without the history), each ranked by the same LLM ranker. Recall and NDCG@10/20 with 95% bootstrap
intervals, failed rankings, and the refinement's mean validation rank per round.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.cf_quality import MOVIELENS
from benchmarks.common import PARTIAL_DIR, RESULTS_DIR, BenchResult, Checkpoints
from models.evaluation import KS, metrics_with_ci

USERS, QUICK_USERS = 200, 8  # a ranking prompt (100 candidates) takes ~17 s of SmolLM2 on 2 cores
SMOLLM2 = "smollm2://135m-instruct"
ROLE_SETTINGS = {
    "profiler": "{temperature: 0.0, max_tokens: 256, max_retries: 2}",
    "ranker": "{max_tokens: 160, max_retries: 1}",
    "optimizer": "{temperature: 0.0, max_tokens: 256, max_retries: 2}",
}
ABLATIONS = {"no_cf_items": "cf_items", "no_history": "history"}


def overrides(users: int) -> list[str]:
    """The benchmark's config: the demo's profiling settings on every text role, more users, no VLM."""
    from models.llm.config import LLMRoleConfig
    from models.llm.engine import engine_dtype

    settings = [
        f"data.movielens_src={MOVIELENS}",
        "cf.epochs=20",
        f"profiling.max_users={users}",
        "profiling.caption_scope=none",
        "profiling.history_items=10",
        "profiling.cf_items=5",
        "profiling.candidate_chars=40",
        "profiling.rounds=2",
        "profiling.rank_top_k=20",
        "ray.num_cpus=8",
    ]
    dtype = engine_dtype(LLMRoleConfig())  # resolved here: a run resumed elsewhere must compute the same
    for role, extra in ROLE_SETTINGS.items():
        base = f"model_source: '{SMOLLM2}', backend: serve, dtype: {dtype}, max_model_len: 4096"
        base += ", kv_cache_gb: 2.0, batch_size: 32, cpus_per_engine: 2.0"  # both cores compute
        settings.append(f"llm.{role}={{{base}, {extra[1:-1]}}}")
    return settings


def ablation_ranks(run_dir: Path, config: Any) -> dict[str, pa.Table]:
    """Per ablation: each user's test rank when the profile is written without CF items or without history
    (an ablation a cut-short run finished on the same refined profiles is read back)."""
    import ray.data

    from jobs.eval import TEST_ROUND
    from jobs.llm_step import LIGHT, LLMStep
    from jobs.profiles import cards_ref, parse_batch, profile_batch
    from jobs.refine import PUBLISHED
    from jobs.stage_runner import fingerprint

    cards = cards_ref(run_dir / "captions")
    users = ray.data.read_parquet(str((run_dir / "refine" / PUBLISHED).resolve()))
    refined_by = fingerprint(run_dir / "refine")  # ablations of these refined profiles
    results = {}
    for name, column in ABLATIONS.items():
        folder = run_dir / "ablations" / f"{name}-{refined_by}"
        if folder.exists():
            results[name] = pq.read_table(folder)
            continue
        emptied = users.map_batches(_emptied, fn_kwargs={"column": column}, batch_format="pyarrow", **LIGHT)
        asked = emptied.map_batches(
            profile_batch,
            fn_kwargs={"cards": cards, "evidence_chars": config.profiling.evidence_chars},
            batch_format="pyarrow",
            **LIGHT,
        )
        profiled = LLMStep("profile", config.llm.profiler, config.seed)(asked)
        parsed = profiled.map_batches(parse_batch, batch_format="pyarrow", **LIGHT)
        ranked = LLMStep("test", config.llm.ranker, config.seed + TEST_ROUND)(
            parsed.map_batches(
                _test_requests, fn_kwargs={"cards": cards, "config": config}, batch_format="pyarrow", **LIGHT
            )
        )
        partial = folder.with_name(f".{folder.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        ranked.map_batches(
            _test_ranks, fn_kwargs={"config": config}, batch_format="pyarrow", **LIGHT
        ).write_parquet(str(partial.resolve()))
        partial.rename(folder)
        results[name] = pq.read_table(folder)
    return results


def _emptied(batch: pa.Table, column: str) -> pa.Table:
    batch = batch.select(["user_id", "history", "cf_items", "test_candidates"])
    index = batch.schema.get_field_index(column)
    return batch.set_column(
        index, column, pa.array([[] for _ in range(batch.num_rows)], pa.list_(pa.string()))
    )


def _test_requests(batch: pa.Table, cards: Any, config: Any) -> pa.Table:
    from jobs.broadcast import mapping_of
    from jobs.eval import TEST_ROUND
    from jobs.llm_step import request_json
    from models.profiling.refiner import rank_requests

    lookup = mapping_of(cards, "item_id", "card")
    asked = [
        [
            request_json(r)
            for r in rank_requests(
                row["user_id"],
                row["user_id"],
                row["text"],
                row["test_candidates"],
                lookup,
                config.profiling,
                config.seed,
                TEST_ROUND,
            )
        ]
        for row in batch.select(["user_id", "text", "test_candidates"]).to_pylist()
    ]
    return batch.append_column("test_requests", pa.array(asked, pa.list_(pa.string())))


def _test_ranks(batch: pa.Table, config: Any) -> pa.Table:
    from jobs.eval import TEST_ROUND
    from jobs.llm_step import row_answers
    from models.profiling.ranking import positive_rank
    from models.profiling.refiner import rank_depth, ranked_columns

    users, ranks, failed = [], [], []
    for row in batch.to_pylist():
        size = len(row["test_candidates"])
        answers = row_answers(row, "test")
        ranked = ranked_columns(
            answers, row["user_id"], config.seed, TEST_ROUND, size, rank_depth(config.profiling, size)
        )
        users.append(row["user_id"])
        ranks.append(positive_rank(ranked, size))
        failed.append(any(a.error is not None for a in answers) or row["error"] is not None)
    return pa.table({"user_id": users, "rank": ranks, "failed": failed})


def most_popular_ranks(run_dir: Path, users: pa.Table) -> np.ndarray:
    """Test ranks when candidates are ordered by their number of train interactions."""
    import pyarrow.compute as pc

    interactions = pq.read_table(run_dir / "data" / "interactions.parquet", columns=["item_id", "split"])
    train = interactions.filter(pc.equal(interactions["split"], "train"))
    counts = train.group_by("item_id").aggregate([("item_id", "count")])
    popularity = dict(zip(counts["item_id"].to_pylist(), counts["item_id_count"].to_pylist(), strict=True))
    scores = np.array(
        [[popularity.get(item, 0) for item in row] for row in users["test_candidates"].to_pylist()],
        dtype=float,
    )
    from models.evaluation import ranks_from_scores

    return ranks_from_scores(scores)


def random_metrics(candidates: int = 100) -> dict[str, float]:
    """Recall and NDCG@k of a uniformly random order (the positive at each rank with probability 1/C)."""
    metrics = {}
    for k in KS:
        metrics[f"recall@{k}"] = k / candidates
        metrics[f"ndcg@{k}"] = float(sum(1 / np.log2(r + 2) for r in range(k)) / candidates)
    return metrics


def run(quick: bool = False) -> BenchResult:
    """The pipeline up to eval with SmolLM2, the ablations, and every ranker on the same users; the run
    folder is kept under the tracked ``benchmarks/results/partial`` until the results are written (its logs
    are ignored), so a run cut short resumes from its finished stages, refinement rounds and ablations,
    after a commit on a new machine too: its figures are model answers, not timings."""
    from jobs.pipeline import run_pipeline
    from jobs.refine import PUBLISHED, tokens_per_round
    from models.config import load_config

    result = BenchResult("profiling_quality")
    users = QUICK_USERS if quick else USERS
    checkpoints = Checkpoints("profiling_quality", work_root=PARTIAL_DIR)
    run_dir = checkpoints.work_folder(f"{users}-users")
    config = load_config(None, overrides(users))
    pipeline = run_pipeline(run_dir, config, until="eval")
    ranks = pq.read_table(run_dir / "eval" / "ranks.parquet")
    refined = pq.read_table(run_dir / "refine" / PUBLISHED)
    aligned = aligned_to(ranks, refined["user_id"])
    per_ranker: dict[str, tuple[np.ndarray, int]] = {
        "most_popular": (most_popular_ranks(run_dir, refined), 0),
        "embedding (MiniLM)": (aligned["embedding"].to_numpy(), 0),
        "cf (hypergraph)": (aligned["cf"].to_numpy(), 0),
        "profile_initial (SmolLM2)": (
            aligned["profile_initial"].to_numpy(),
            int(np.sum(aligned["failed_profile_initial"].to_numpy(zero_copy_only=False))),
        ),
        "profile_refined (SmolLM2)": (
            aligned["profile_refined"].to_numpy(),
            int(np.sum(aligned["failed_profile_refined"].to_numpy(zero_copy_only=False))),
        ),
    }
    for name, table in ablation_ranks(run_dir, config).items():
        table = aligned_to(table, refined["user_id"])
        failed = int(np.sum(table["failed"].to_numpy(zero_copy_only=False)))
        per_ranker[f"profile without {name.removeprefix('no_').replace('_', ' ')} (SmolLM2)"] = (
            table["rank"].to_numpy(),
            failed,
        )
    result.add(ranker="random (analytic)", num_users=refined.num_rows, **random_metrics())
    for name, (values, failed) in per_ranker.items():
        metrics = metrics_with_ci(values, seed=config.seed)
        result.add(ranker=name, failed=failed, **metrics)
    trajectory = [r for r in refined["valid_ranks"].to_pylist() if r]
    rounds = max(len(r) for r in trajectory) if trajectory else 0
    tokens = {row.pop("round"): row for row in tokens_per_round(refined)}
    for round_index in range(rounds):
        current = [r[min(round_index, len(r) - 1)] for r in trajectory]  # a stopped user keeps their rank
        best = [min(r[: round_index + 1]) for r in trajectory]
        result.add(
            trajectory_round=round_index,
            mean_valid_rank=float(np.mean(current)),
            mean_best_valid_rank_so_far=float(np.mean(best)),
            valid_recall_at_20=float(np.mean(np.array(current) < 20)),
            users=len(trajectory),
            tokens=tokens.get(round_index),  # the round's prompt, generated and prefix-cached tokens
        )
    result.add(**ranker_diagnostics(run_dir, refined, aligned, config))
    stages = {name: stage_marker(r.path).get("seconds") for name, r in pipeline.results.items()}
    result.notes.append(
        f"MovieLens latest-small, {refined.num_rows} test users, 1 positive + 99 sampled negatives each, the "
        f"same candidates for every ranker; {SMOLLM2} as profiler, ranker (top 20) and optimizer, 2 "
        "refinement rounds; "
        f"item cards are titles, genres and tags (no VLM); stage seconds: {json.dumps(stages)}"
    )
    result.notes.append(
        "validation ranks are 0-based; the best-so-far column is chosen on validation (optimistic)"
    )
    _plot(result)
    checkpoints.clear()
    return result


def ranker_diagnostics(run_dir: Path, refined: pa.Table, test_ranks: pa.Table, config: Any) -> dict[str, Any]:
    """Whether the LLM ranker reads the profile: its refinement answers that list candidates in the order
    shown, and the users whose test rank did not move although their refined profile differs."""
    from models.profiling.ranking import in_shown_order as in_shown_order_of
    from models.profiling.refiner import user_permutation

    rankings = in_shown_order = 0
    if config.profiling.rank_permutations == 1:  # with more shuffles the Borda order hides the shown one
        folders = sorted(
            (run_dir / "refine").glob("round_*"), key=lambda f: int(f.name.removeprefix("round_"))
        )
        for round_index, folder in enumerate(folders):
            columns = ["user_id", "valid_candidates", "valid_ranks", "ranked_first"]
            rows = pq.read_table(folder, columns=columns).to_pylist()
            for row in rows:
                if len(row["valid_ranks"]) != round_index + 1 or not row["ranked_first"]:
                    continue  # stopped before this round, or an empty answer
                order = user_permutation(
                    row["user_id"], config.seed, round_index, 0, len(row["valid_candidates"])
                )
                shown = np.argsort(order)[row["ranked_first"]]
                rankings += 1
                in_shown_order += in_shown_order_of(shown.tolist())
    initial, refined_text = refined["profile_initial"].to_pylist(), refined["profile_refined"].to_pylist()
    changed = np.array([a != b for a, b in zip(initial, refined_text, strict=True)])
    moved = test_ranks["profile_initial"].to_numpy() != test_ranks["profile_refined"].to_numpy()
    return {
        "diagnostic": "llm_ranker",
        "refinement_rankings": rankings,
        "rankings_in_shown_order": in_shown_order,
        "users_with_a_changed_profile": int(changed.sum()),
        "of_them_with_a_moved_test_rank": int((changed & moved).sum()),
    }


def stage_marker(stage_dir: Path) -> dict[str, Any]:
    """A finished stage's marker, with the seconds it took when it ran (a resumed run skips it); empty for a
    stage without one."""
    from jobs.stage_runner import MARKER

    marker = stage_dir / MARKER
    return json.loads(marker.read_text()) if marker.is_file() else {}


def aligned_to(table: pa.Table, users: pa.ChunkedArray) -> pa.Table:
    """The rows of ``table`` (keyed by user_id) in the order of ``users``, every one of whom it must hold."""
    import pyarrow.compute as pc

    rows = pc.index_in(users, value_set=table["user_id"])
    if rows.null_count:
        raise KeyError(f"{rows.null_count} users have no row in a table of {table.num_rows}")
    return table.take(rows)


def _plot(result: BenchResult) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rankers = [row for row in result.rows if "ranker" in row]
    rounds = [row for row in result.rows if "trajectory_round" in row]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 1]})
    names = [row["ranker"] for row in rankers]
    values = [row["recall@20"] for row in rankers]
    errors = [
        [row["recall@20"] - row["ci95"]["recall@20"][0], row["ci95"]["recall@20"][1] - row["recall@20"]]
        if "ci95" in row
        else [0.0, 0.0]
        for row in rankers
    ]
    axes[0].bar(range(len(names)), values, yerr=np.array(errors).T, color="#3b7dd8", capsize=3)
    axes[0].set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=7)
    axes[0].set_ylabel("Recall@20 (test, 1:99)")
    axes[0].set_title("rankers on the same users, 95% intervals")
    axes[1].plot(
        [r["trajectory_round"] for r in rounds], [r["mean_valid_rank"] for r in rounds], "o-", label="current"
    )
    axes[1].plot(
        [r["trajectory_round"] for r in rounds],
        [r["mean_best_valid_rank_so_far"] for r in rounds],
        "s--",
        label="best so far",
    )
    axes[1].set_xlabel("refinement round")
    axes[1].set_ylabel("mean validation rank (0-based)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS_DIR / "profiling_quality.png", dpi=110)
    plt.close(fig)
