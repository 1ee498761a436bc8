"""Stage ``eval``: TailorBench 1:99 reranking on the test split for each ranker, with 95% intervals.

Rankers: the LLM ranker with the initial and with the refined profile, the CF model's scores (when the
pipeline trained one), and MiniLM similarity between the refined profile and each candidate. One Ray Data
pipeline over the refined users: both profiles' ranking requests in one LLM step, then an actor that
turns answers into ranks and adds the CF and embedding ranks, and the taste spread
(``models.profiling.drift``) of each user's history and of their profile in every refinement round.
``RUN/eval/ranks.parquet/`` holds each user's ranks and spreads; ``metrics.json`` is computed from it in a
task. A failed LLM ranking counts as a miss (rank = the number of candidates) and is counted per ranker.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.broadcast import mapping_of
from jobs.catalogue import taste_spread
from jobs.llm_step import LIGHT, LLMStep, request_json, row_answers, summed_tallies, tally
from jobs.pipeline import stage_main
from jobs.profiles import cards_ref
from jobs.refine import PUBLISHED
from jobs.stage_runner import StageResult
from jobs.topk import embedding_matrix
from models.config import TailorMindConfig
from models.evaluation import KS, finite_mean, metrics_with_ci, ranks_from_scores
from models.llm.config import LLMConfig
from models.llm.structured import LLMAnswer
from models.profiling.drift import DEFINITION
from models.profiling.ranking import in_shown_order, positive_rank
from models.profiling.refiner import rank_depth, rank_requests, ranked_columns
from runtime.cluster import connect

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun

log = logging.getLogger("tailormind.eval")
TEST_ROUND = 10_000  # shuffle seed offset of the test ranking, distinct from every refinement round
LLM_RANKERS = {"profile_initial": "profile_initial", "profile_refined": "profile_refined"}
RANKS = "ranks.parquet"  # a folder of Parquet files


def test_requests_batch(batch: pa.Table, cards: Any, config: TailorMindConfig) -> pa.Table:
    """Per user: the ranking requests of the initial profile, then those of the refined profile."""
    lookup = mapping_of(cards, "item_id", "card")
    asked = []
    for row in batch.select(["user_id", "test_candidates", *LLM_RANKERS.values()]).to_pylist():
        requests = []
        for ranker, column in LLM_RANKERS.items():
            requests += rank_requests(
                f"{row['user_id']}/{ranker}",
                row["user_id"],
                row[column],
                row["test_candidates"],
                lookup,
                config.profiling,
                config.seed,
                TEST_ROUND,
            )
        asked.append([request_json(r) for r in requests])
    return batch.append_column("test_requests", pa.array(asked, pa.list_(pa.string())))


class TestRankers:
    """Each user's test rank under the LLM rankers (from the step's answers), CF and MiniLM similarity."""

    def __init__(
        self, cards: Any, cf_embeddings: str | None, catalogue: str | None, config: TailorMindConfig
    ):
        from models.embedding import CardVectors, TextEmbedder

        self.config = config
        self.embedder = TextEmbedder()
        self.card_vectors = CardVectors(self.embedder, mapping_of(cards, "item_id", "card"))  # across batches
        self.cf = _cf_tables(cf_embeddings) if cf_embeddings else None
        self.spread = taste_spread(catalogue, self.card_vectors) if catalogue else None

    def __call__(self, batch: pa.Table) -> pa.Table:
        """user_id, one rank column per ranker, and ``failed_<ranker>`` and ``shown_order_<ranker>`` (every
        answer listed the candidates in the order shown) for the LLM rankers."""
        rows = batch.to_pylist()
        permutations = self.config.profiling.rank_permutations
        columns: dict[str, list[Any]] = {"user_id": [row["user_id"] for row in rows]}
        for number, ranker in enumerate(LLM_RANKERS):
            ranks, failed, shown_order = [], [], []
            for row in rows:
                answers = row_answers(row, "test")[number * permutations : (number + 1) * permutations]
                ranks.append(self._llm_rank(row, answers))
                failed.append(any(a.error is not None for a in answers))
                shown_order.append(all(a.value and in_shown_order(a.value["top"]) for a in answers))
            columns[ranker], columns[f"failed_{ranker}"] = ranks, failed
            columns[f"shown_order_{ranker}"] = shown_order
        columns["llm_calls"] = [tally(row, ["test"]) for row in rows]
        columns["embedding"] = self._embedding_ranks(rows).tolist()
        if self.cf is not None:
            columns["cf"] = self._cf_ranks(rows).tolist()
        if self.spread is not None:
            columns.update(self._spreads(rows))
        return pa.table(columns)

    def _spreads(self, rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
        """Taste spread (drift) of each user's history, of the profile of every round, and of the best."""
        assert self.spread is not None
        rounds = [row["round_profiles"] or [] for row in rows]
        flat = self.spread.of_texts([text for texts in rounds for text in texts]).tolist()
        ends = np.cumsum([len(texts) for texts in rounds])
        return {
            "spread_history": [self.spread.of_items(row["history"]) for row in rows],
            "spread_rounds": [flat[end - len(texts) : end] for end, texts in zip(ends, rounds, strict=True)],
            "spread_refined": self.spread.of_texts([row["profile_refined"] or "" for row in rows]).tolist(),
        }

    def _llm_rank(self, row: dict[str, Any], answers: list[LLMAnswer]) -> int:
        size = len(row["test_candidates"])
        ranked = ranked_columns(
            answers,
            row["user_id"],
            self.config.seed,
            TEST_ROUND,
            size,
            rank_depth(self.config.profiling, size),
        )
        return positive_rank(ranked, size)  # a failed answer ranks nothing: the positive counts as a miss

    def _embedding_ranks(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """MiniLM cosine of the refined profile (else the mean history card) with each candidate card."""
        texts = [row["profile_refined"] for row in rows]
        profiles = self.embedder.embed([t or "-" for t in texts])
        users = np.stack(
            [
                profile if text or not row["history"] else self.card_vectors(row["history"]).mean(axis=0)
                for profile, text, row in zip(profiles, texts, rows, strict=True)
            ]
        )
        candidates = np.stack([self.card_vectors(row["test_candidates"]) for row in rows])
        return ranks_from_scores(np.einsum("ud,ucd->uc", users, candidates))

    def _cf_ranks(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Dot products of the CF user and item embeddings (users the model never saw rank last)."""
        assert self.cf is not None
        user_index, users, item_index, items = self.cf
        found = pc.index_in(pa.array([row["user_id"] for row in rows]), value_set=user_index).to_numpy(
            zero_copy_only=False
        )
        flat = pa.array([i for row in rows for i in row["test_candidates"]])
        positions = pc.index_in(flat, value_set=item_index).to_numpy(zero_copy_only=False)
        size = len(rows[0]["test_candidates"]) if rows else 0
        user_vectors = users[np.nan_to_num(found, nan=0).astype(np.int64)]
        item_vectors = items[np.nan_to_num(positions, nan=0).astype(np.int64)].reshape(len(rows), size, -1)
        ranks = ranks_from_scores(np.einsum("ud,ucd->uc", user_vectors, item_vectors))
        return np.where(np.isnan(found.astype(np.float64)), size, ranks)


def _cf_tables(directory: str) -> tuple[pa.Array, np.ndarray, pa.Array, np.ndarray]:
    """(user ids, user embeddings, item ids, item embeddings) of a CF run."""
    users, items = (pq.read_table(Path(directory) / name) for name in ("users.parquet", "items.parquet"))
    return (
        users["user_id"].combine_chunks(),
        embedding_matrix(users["embedding"]),
        items["item_id"].combine_chunks(),
        embedding_matrix(items["embedding"]),
    )


def drift_summary(table: pa.Table) -> dict[str, Any]:
    """Mean taste spread of the histories, of the profiles of each refinement round, and of the best."""
    rounds = table["spread_rounds"].to_pylist()
    depth = max((len(r) for r in rounds), default=0)
    return {
        "history": finite_mean(table["spread_history"].to_pylist()),
        "rounds": [finite_mean([r[n] for r in rounds if len(r) > n]) for n in range(depth)],
        "refined": finite_mean(table["spread_refined"].to_pylist()),
        "definition": DEFINITION,
    }


def ranker_metrics(ranks_path: str, seed: int, depth: int, llm: LLMConfig) -> dict[str, Any]:
    """Each ranker's metrics with intervals and failed LLM answers (read in a task: ints per user).

    LLM rankers return their top ``depth``: only Recall/NDCG@k with k <= depth are reported for them, with
    ``in_shown_order``: the users whose every answer listed the candidates in the order shown.
    """
    table = pq.read_table(ranks_path)
    rankers = [name for name in (*LLM_RANKERS, "cf", "embedding") if name in table.column_names]
    metrics = {}
    for name in rankers:
        ks = [k for k in KS if k <= depth] if name in LLM_RANKERS else list(KS)
        values = metrics_with_ci(table[name].to_numpy(), ks=ks, seed=seed)
        for count, column in (("failed", f"failed_{name}"), ("in_shown_order", f"shown_order_{name}")):
            if column in table.column_names:
                values[count] = int(pc.sum(table[column]).as_py() or 0)
        metrics[name] = values
    drift = drift_summary(table) if "spread_history" in table.column_names else None
    return {
        "rankers": metrics,
        "llm_calls": summed_tallies(table["llm_calls"].to_pylist(), llm, {"test": "ranker"}),
        "drift": drift,
    }


def evaluate_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``eval``: RUN/eval/metrics.json in the CONTRACT's format, and each user's ranks."""
    import ray
    import ray.data

    config = pipeline.config
    refined = pipeline.results["refine"].path / PUBLISHED
    captions = pipeline.results["captions"].path
    cf = pipeline.results.get("cf")
    catalogue = pipeline.results.get("catalogue")

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray, pipeline.runner.run_dir)
        cards = cards_ref(captions)
        users = ray.data.read_parquet(str(refined.resolve()))
        asked = users.map_batches(
            test_requests_batch, fn_kwargs={"cards": cards, "config": config}, batch_format="pyarrow", **LIGHT
        )
        answered = LLMStep("test", config.llm.ranker, config.seed + TEST_ROUND)(asked)
        embeddings = str((cf.path / "embeddings").resolve()) if cf is not None else None
        clusters = str(catalogue.path.resolve()) if catalogue is not None else None
        answered.map_batches(
            TestRankers,
            fn_constructor_kwargs={
                "cards": cards,
                "cf_embeddings": embeddings,
                "catalogue": clusters,
                "config": config,
            },
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=1,
        ).write_parquet(str((out / RANKS).resolve()))
        candidates = config.profiling.num_negatives + 1
        depth = rank_depth(config.profiling, candidates)
        task = ray.remote(ranker_metrics).options(**LIGHT)
        computed = ray.get(task.remote(str((out / RANKS).resolve()), config.seed, depth, config.llm))
        rankers = computed["rankers"]
        num_users = next(iter(rankers.values()))["num_users"] if rankers else 0
        metrics = {
            "rankers": rankers,
            "llm_calls": computed["llm_calls"],
            "num_users": num_users,
            "split": "test",
            "candidates": candidates,
            "llm_rank_depth": depth,
            "drift": computed["drift"],
            "note": f"LLM rankers return their top {depth}, so their metrics stop at @{depth}; a positive "
            "ranked below that, or a failed LLM answer (failed = such users per ranker), counts as a miss",
        }
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        for name in LLM_RANKERS:
            positional = rankers.get(name, {}).get("in_shown_order", 0)
            if positional * 2 > num_users:
                log.warning(
                    "the %s ranker listed the candidates in the order shown for %d of %d users: its ranks "
                    "carry no signal of the profile (the ranker model is too small to rank)",
                    name,
                    positional,
                    num_users,
                )
        summary = {name: {k: v for k, v in m.items() if k != "ci95"} for name, m in rankers.items()}
        return {**summary, "llm_calls": computed["llm_calls"]}

    section = {"ranker": config.llm.ranker, "profiling": config.profiling, "seed": config.seed}
    inputs = [refined.parent, captions] + [r.path for r in (cf, catalogue) if r is not None]
    return pipeline.runner.run("eval", build, config=section, inputs=inputs)


if __name__ == "__main__":
    raise SystemExit(stage_main("eval", sys.argv[1:]))
