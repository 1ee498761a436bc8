"""Profiling quality with real weights: SmolLM2's likelihood ranker against simple rankers and its controls.

The pipeline runs up to ``eval`` on MovieLens latest-small (item cards from titles, genres and tags; no VLM)
with SmolLM2-135M-Instruct as profiler, likelihood ranker and optimizer, then, for the same users and the
same 100 candidates each (uniform negatives, and popularity-matched ones): random (analytic), most popular,
MiniLM, CF, the listwise ranker with the initial profile, the likelihood ranker with the user's own initial
and refined profile, with another user's profile and with the item prior alone, the paper's evidence
ablations (a profile written without the CF items, one without the history) and CF + profile fusion.
Recall and NDCG@10/20 with 95% intervals, paired differences (own - swapped, refined - initial, fusion -
CF) with paired bootstrap intervals in Recall@20 and mean reciprocal rank, the refinement's mean validation
rank per round, degenerate profiles, and tokens per round.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks.cf_quality import MOVIELENS
from benchmarks.common import PARTIAL_DIR, RESULTS_DIR, BenchResult, Checkpoints
from models.evaluation import KS, BootstrapSums, rank_values, summary, user_keys

USERS, QUICK_USERS = 200, 8
SMOLLM2 = "smollm2://135m-instruct"
ROLE_SETTINGS = {
    "profiler": "{temperature: 0.0, max_tokens: 256, max_retries: 2}",
    "ranker": "{max_tokens: 160, max_retries: 1}",
    "optimizer": "{temperature: 0.0, max_tokens: 256, max_retries: 2}",
}
ABLATIONS = {"no_cf_items": "cf_items", "no_history": "history"}
SETS = ("uniform", "popularity_matched")
# eval's ranker columns -> the names this benchmark's rows use
RANKERS = {
    "profile_initial": "likelihood_own",
    "profile_refined": "likelihood_own_refined",
    "profile_swapped": "likelihood_swapped",
    "item_prior": "likelihood_prior",
    "cf": "cf",
    "embedding": "embedding",
    "fusion": "fusion",
}
PAIRS = (
    ("likelihood_own", "likelihood_swapped"),
    ("likelihood_own_refined", "likelihood_own"),
    ("fusion", "cf"),
)


def overrides(users: int) -> list[str]:
    """The benchmark's config: SmolLM2 in every text role, the likelihood ranker with its controls."""
    from models.llm.config import LLMRoleConfig
    from models.llm.engine import engine_dtype

    settings = [
        f"data.movielens_src={MOVIELENS}",
        f"profiling.max_users={users}",
        "profiling.caption_scope=none",
        "profiling.history_items=10",
        "profiling.cf_items=5",
        "profiling.candidate_chars=40",
        "profiling.rounds=2",
        "profiling.rank_mode=likelihood",
        "profiling.controls=true",
        "profiling.candidate_sets=[uniform, popularity_matched]",
        "ray.num_cpus=8",
    ]
    dtype = engine_dtype(LLMRoleConfig())  # resolved here: a run resumed elsewhere must compute the same
    for role, extra in ROLE_SETTINGS.items():
        base = f"model_source: '{SMOLLM2}', backend: serve, dtype: {dtype}, max_model_len: 4096"
        base += ", kv_cache_gb: 2.0, batch_size: 32, cpus_per_engine: 2.0"  # both cores compute
        base += ", kv_block_size: 32"  # the profile prefix is read from the prefix cache (ranker_cost)
        settings.append(f"llm.{role}={{{base}, {extra[1:-1]}}}")
    return settings


def extra_ranks(run_dir: Path, config: Any) -> dict[str, pa.Table]:
    """Per extra ranker (the two evidence ablations and the listwise ranker with the initial profile): each
    user's test ranks on both candidate sets; a part a cut-short run finished is read back."""
    import ray.data

    from jobs.eval import RankerActor, requests_batch
    from jobs.llm_step import LIGHT, LLMStep
    from jobs.profiles import profile_batch
    from jobs.score_step import ScoreStep
    from jobs.stage_runner import fingerprint
    from models.profiling.initial import parse_batch
    from runtime.artifacts import REFINED, cards_ref, facts_ref, priors_ref

    cards, priors = cards_ref(run_dir / "captions"), priors_ref(run_dir / "priors")
    facts = facts_ref(run_dir / "cohort", run_dir / "catalogue")
    users = ray.data.read_parquet(str((run_dir / "refine" / REFINED).resolve()))
    refined_by = fingerprint(run_dir / "refine")
    listwise = config.model_copy(deep=True)
    listwise.profiling.rank_mode, listwise.profiling.controls = "listwise", False
    plain = config.model_copy(deep=True)
    plain.profiling.controls = False
    results = {}
    for name in (*ABLATIONS, "listwise"):
        folder = run_dir / "extra" / f"{name}-{refined_by}"
        if not folder.exists():
            stage_config = listwise if name == "listwise" else plain
            rows = users.map_batches(_initial_only, batch_format="pyarrow", **LIGHT)
            if name in ABLATIONS:
                emptied = users.map_batches(
                    _emptied, fn_kwargs={"column": ABLATIONS[name]}, batch_format="pyarrow", **LIGHT
                )
                asked = emptied.map_batches(
                    profile_batch,
                    fn_kwargs={
                        "cards": cards,
                        "facts": facts,
                        "evidence_chars": config.profiling.evidence_chars,
                    },
                    batch_format="pyarrow",
                    **LIGHT,
                )
                profiled = LLMStep("profile", config.llm.profiler, config.seed)(asked)
                rows = profiled.map_batches(parse_batch, batch_format="pyarrow", **LIGHT).map_batches(
                    _as_profiles, batch_format="pyarrow", **LIGHT
                )
            requests = rows.map_batches(
                requests_batch,
                fn_kwargs={"cards": cards, "config": stage_config},
                batch_format="pyarrow",
                **LIGHT,
            )
            if name == "listwise":
                answered = LLMStep("test", config.llm.ranker, config.seed + 10_000)(requests)
            else:
                answered = ScoreStep("test", config.llm.ranker)(requests)
            ranked = answered.map_batches(
                RankerActor,
                fn_constructor_kwargs={
                    "cards": cards,
                    "priors": priors,
                    "cf_embeddings": None,
                    "catalogue": None,
                    "config": stage_config,
                },
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=1),
                num_cpus=1,
            )
            partial = folder.with_name(f".{folder.name}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            ranked.write_parquet(str(partial.resolve()))
            partial.rename(folder)
        results[name] = pq.read_table(folder)
    return results


def _initial_only(batch: pa.Table) -> pa.Table:
    """The refined users with their initial profile in both profile columns (one ranking per user)."""
    index = batch.schema.get_field_index("profile_refined")
    return batch.set_column(index, "profile_refined", batch["profile_initial"])


def _emptied(batch: pa.Table, column: str) -> pa.Table:
    """The refined users with one evidence column emptied (the ablation's profile input)."""
    batch = batch.drop_columns(["llm_calls"])
    index = batch.schema.get_field_index(column)
    return batch.set_column(
        index, column, pa.array([[] for _ in range(batch.num_rows)], pa.list_(pa.string()))
    )


def _as_profiles(batch: pa.Table) -> pa.Table:
    """An ablation's new profile in both profile columns (the ranker reads one of them)."""
    batch = batch.drop_columns([c for c in ("profile_initial", "profile_refined") if c in batch.column_names])
    return batch.append_column("profile_initial", batch["text"]).append_column(
        "profile_refined", batch["text"]
    )


def most_popular_ranks(run_dir: Path, users: pa.Table, column: str) -> np.ndarray:
    """Test ranks when candidates are ordered by their number of train interactions."""
    from models.evaluation import ranks_from_scores

    interactions = pq.read_table(run_dir / "data" / "interactions.parquet", columns=["item_id", "split"])
    train = interactions.filter(pc.equal(interactions["split"], "train"))
    counts = train.group_by("item_id").aggregate([("item_id", "count")])
    popularity = dict(zip(counts["item_id"].to_pylist(), counts["item_id_count"].to_pylist(), strict=True))
    rows = users[column].to_pylist()
    jitter = np.random.default_rng(0).random((len(rows), len(rows[0]) if rows else 0)) * 0.5  # ties broken
    scores = np.array([[popularity.get(item, 0) for item in row] for row in rows], dtype=float) + jitter
    return ranks_from_scores(scores)


def random_metrics(candidates: int = 100) -> dict[str, float]:
    """Recall and NDCG@k of a uniformly random order (the positive at each rank with probability 1/C)."""
    metrics = {}
    for k in KS:
        metrics[f"recall@{k}"] = k / candidates
        metrics[f"ndcg@{k}"] = float(sum(1 / np.log2(r + 2) for r in range(k)) / candidates)
    return metrics


def run(quick: bool = False) -> BenchResult:
    """The pipeline up to eval with SmolLM2, the extra rankers, and every row on the same users; the run
    folder is kept under the tracked ``benchmarks/results/partial`` until the results are written (its logs
    are ignored), so a run cut short resumes from its finished stages, rounds and extra rankers."""
    from jobs.pipeline import run_pipeline
    from models.config import load_config
    from models.profiling.test_ranking import CANDIDATE_SETS
    from runtime.artifacts import REFINED

    result = BenchResult("profiling_quality")
    users = QUICK_USERS if quick else USERS
    checkpoints = Checkpoints("profiling_quality", work_root=PARTIAL_DIR)
    run_dir = checkpoints.work_folder(f"{users}-users-likelihood")
    config = load_config(None, overrides(users))
    pipeline = run_pipeline(run_dir, config, until="eval")
    refined = pq.read_table(run_dir / "refine" / REFINED)
    eval_ranks = aligned_to(pq.read_table(run_dir / "eval" / "ranks.parquet"), refined["user_id"])
    fusion = json.loads((run_dir / "eval" / "metrics.json").read_text())["fusion_weight"]
    from models.profiling.fusion import FUSION_WEIGHTS

    weight_index = FUSION_WEIGHTS.index(fusion)
    extra = {name: aligned_to(t, refined["user_id"]) for name, t in extra_ranks(run_dir, config).items()}
    keys = user_keys(refined["user_id"].to_pylist())
    result.add(
        ranker="random (analytic)", candidates="uniform", num_users=refined.num_rows, **random_metrics()
    )
    for candidates in SETS:
        candidate_column, suffix = CANDIDATE_SETS[candidates]
        columns = {"most_popular": most_popular_ranks(run_dir, refined, candidate_column)}
        for column, name in RANKERS.items():
            source = f"fusion_w{weight_index}{suffix}" if column == "fusion" else column + suffix
            if source in eval_ranks.column_names:
                columns[name] = eval_ranks[source].to_numpy()
        for name, table in extra.items():
            source = "profile_initial" + suffix
            if source in table.column_names:
                columns[f"likelihood_{name}" if name != "listwise" else "listwise_own"] = table[
                    source
                ].to_numpy()
        sums = BootstrapSums(config.seed)
        sums.add(keys, {f"{n}/{m}": v for n, ranks in columns.items() for m, v in rank_values(ranks).items()})
        for name in columns:
            metrics = summary(_prefixed(sums, name), [m for k in KS for m in (f"recall@{k}", f"ndcg@{k}")])
            result.add(ranker=name, candidates=candidates, **metrics, mrr=sums.mean(f"{name}/mrr"))
        for a, b in PAIRS:
            if a in columns and b in columns:
                for metric in ("recall@20", "mrr"):
                    diff = sums.mean(f"{a}/{metric}") - sums.mean(f"{b}/{metric}")
                    interval = sums.interval(f"{a}/{metric}", minus=f"{b}/{metric}")
                    result.add(
                        paired=True, a=a, b=b, candidates=candidates, metric=metric, diff=diff, ci95=interval
                    )
    _trajectory(result, refined)
    profiles = json.loads((run_dir / "profiles" / "_stage.json").read_text())["summary"]
    result.add(
        diagnostic="profiles",
        users=profiles["users"],
        degenerate=profiles["degenerate"],
        repaired=profiles["repaired"],
    )
    stages = {name: stage_marker(r.path).get("seconds") for name, r in pipeline.results.items()}
    result.notes.append(
        f"MovieLens latest-small, {refined.num_rows} test users, 1 positive + 99 negatives each (uniform, "
        "and from the positive's popularity decile), the same candidates for every ranker; "
        f"{SMOLLM2} as profiler, likelihood ranker and optimizer, 2 refinement rounds, 3 validation "
        f"positives per user; fusion weight {fusion} (chosen on validation); item cards are titles, "
        f"genres and tags (no VLM); stage seconds: {json.dumps(stages)}"
    )
    result.notes.append("paired rows: a - b over the same users, with a paired Poisson bootstrap interval")
    _plot(result)
    checkpoints.clear()
    return result


def _prefixed(sums: BootstrapSums, name: str) -> BootstrapSums:
    """The sums of one ranker's metrics under their plain names."""
    view = BootstrapSums(sums.seed, sums.resamples, sums.users, weights=sums.weights)
    prefix = f"{name}/"
    view.totals = {k.removeprefix(prefix): v for k, v in sums.totals.items() if k.startswith(prefix)}
    view.weighted = {k.removeprefix(prefix): v for k, v in sums.weighted.items() if k.startswith(prefix)}
    return view


def _trajectory(result: BenchResult, refined: pa.Table) -> None:
    """Mean validation rank of the current and of the best-so-far profile per round, and its tokens."""
    from models.profiling.refinement_summary import tokens_per_round

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
            users=len(trajectory),
            tokens=tokens.get(round_index),
        )


def stage_marker(stage_dir: Path) -> dict[str, Any]:
    """A finished stage's marker, with the seconds it took when it ran (empty for a stage without one)."""
    from jobs.stage_runner import MARKER

    marker = stage_dir / MARKER
    return json.loads(marker.read_text()) if marker.is_file() else {}


def aligned_to(table: pa.Table, users: pa.ChunkedArray) -> pa.Table:
    """The rows of ``table`` (keyed by user_id) in the order of ``users``, every one of whom it must hold."""
    rows = pc.index_in(users, value_set=table["user_id"])
    if rows.null_count:
        raise KeyError(f"{rows.null_count} users have no row in a table of {table.num_rows}")
    return table.take(rows)


def _plot(result: BenchResult) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), gridspec_kw={"width_ratios": [3, 3, 1.2]})
    for ax, candidates in zip(axes[:2], SETS, strict=True):
        rows = [r for r in result.rows if r.get("candidates") == candidates and "ranker" in r]
        names = [r["ranker"] for r in rows]
        values = [r["recall@20"] for r in rows]
        errors = [
            [r["recall@20"] - r["ci95"]["recall@20"][0], r["ci95"]["recall@20"][1] - r["recall@20"]]
            if "ci95" in r
            else [0.0, 0.0]
            for r in rows
        ]
        ax.bar(range(len(names)), values, yerr=np.array(errors).T.reshape(2, -1), color="#3b7dd8", capsize=3)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("Recall@20 (test, 1:99)")
        ax.set_title(f"{candidates} negatives, 95% intervals")
    rounds = [r for r in result.rows if "trajectory_round" in r]
    axes[2].plot(
        [r["trajectory_round"] for r in rounds], [r["mean_valid_rank"] for r in rounds], "o-", label="current"
    )
    axes[2].plot(
        [r["trajectory_round"] for r in rounds],
        [r["mean_best_valid_rank_so_far"] for r in rounds],
        "s--",
        label="best so far",
    )
    axes[2].set_xlabel("refinement round")
    axes[2].set_ylabel("mean validation rank (0-based)")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS_DIR / "profiling_quality.png", dpi=110)
    plt.close(fig)
