"""Each user's test rank under every ranker of TailorBench's 1:99 reranking, and the metrics over users.

Rankers: the configured LLM ranker (likelihood or listwise) with the initial and with the refined profile,
the CF model's scores, MiniLM similarity between the refined profile and each candidate, and in likelihood
mode CF + profile fusion (its weight chosen on validation) and, with ``profiling.controls``, the same ranker
with another user's profile (``profile_swapped``) and the items' prior alone (``item_prior``). With
``popularity_matched`` in ``profiling.candidate_sets`` every ranker also ranks each user's
popularity-matched candidates (columns ``<ranker>@popular``). A failed LLM ranking counts as a miss. No Ray
here: the eval stage runs ``TestRankers`` in an actor and ``ranker_metrics`` in a task.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.config import TailorMindConfig
from models.embedding import CardVectors, TextEmbedder
from models.evaluation import (
    KS,
    BootstrapSums,
    finite_mean,
    rank_values,
    ranks_from_scores,
    summary,
    user_keys,
)
from models.llm.config import LLMConfig
from models.llm.rows import row_answers, summed_tallies, tally
from models.llm.structured import LLMAnswer
from models.profiling.drift import DEFINITION, TasteSpread
from models.profiling.fusion import FUSION_WEIGHTS, fused, mean_reciprocal_rank, positive_ranks_rows
from models.profiling.likelihood import likelihood_requests, pmi_scores, positive_ranks
from models.profiling.ranking import in_shown_order, positive_rank
from models.profiling.refiner import rank_depth, rank_requests, ranked_columns
from models.vectors import embedding_matrix

Row = dict[str, Any]
TEST_ROUND = 10_000  # shuffle seed offset of the test ranking, distinct from every refinement round
LLM_RANKERS = {"profile_initial": "profile_initial", "profile_refined": "profile_refined"}
CONTROLS = {"profile_swapped": "swapped_profile"}  # likelihood controls that read a profile
CANDIDATE_SETS = {
    "uniform": ("test_candidates", ""),
    "popularity_matched": ("test_candidates_popular", "@popular"),
}


def _profiles(row: dict[str, Any], config: TailorMindConfig) -> dict[str, str]:
    """The profile each profile ranker reads for this user (controls only when configured and possible)."""
    profiles = {name: row[column] or "" for name, column in LLM_RANKERS.items()}
    if (
        config.profiling.controls
        and config.profiling.rank_mode == "likelihood"
        and row.get("swapped_profile")
    ):
        profiles |= {name: row[column] for name, column in CONTROLS.items()}
    return profiles


def test_requests(
    row: Row, cards: Mapping[str, str], config: TailorMindConfig
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(requests, layout): one user's ranking requests of every profile ranker on every candidate set, and
    where each ranker's answers start; a profile text shared by two rankers (refinement kept the initial
    profile) is ranked once."""
    settings = config.profiling
    requests: list[dict[str, Any]] = []
    layout: dict[str, int] = {}
    for name, (column, suffix) in _candidate_sets(config).items():
        if settings.rank_mode == "listwise" and name != "uniform":
            continue  # a listwise ranking costs a long generation: the headline set only
        done: dict[str, int] = {}
        for ranker, profile in _profiles(row, config).items():
            if profile in done:
                layout[ranker + suffix] = done[profile]
                continue
            layout[ranker + suffix] = done[profile] = len(requests)
            key = f"{row['user_id']}/{ranker}{suffix}"
            if settings.rank_mode == "likelihood":
                requests += likelihood_requests(key, profile, row[column], cards, settings.candidate_chars)
            else:
                requests += rank_requests(
                    key, row["user_id"], profile, row[column], cards, settings, config.seed, TEST_ROUND
                )
    return requests, layout


def _candidate_sets(config: TailorMindConfig) -> dict[str, tuple[str, str]]:
    return {name: CANDIDATE_SETS[name] for name in config.profiling.candidate_sets}


class TestRankers:
    """Each user's test rank under every ranker: the LLM rankers (from the step's answers), CF, MiniLM
    similarity, and in likelihood mode the prior alone and CF + profile fusion at every weight."""

    def __init__(
        self,
        cards: Mapping[str, str],
        priors: Mapping[str, float],
        cf_embeddings: str | None,
        spread: Callable[[CardVectors], TasteSpread] | None,
        config: TailorMindConfig,
    ):
        self.config = config
        self.likelihood = config.profiling.rank_mode == "likelihood"
        self.priors = priors
        self.embedder = TextEmbedder()
        self.card_vectors = CardVectors(self.embedder, cards)  # kept across batches
        self.cf = _cf_tables(cf_embeddings) if cf_embeddings else None
        self.spread = spread(self.card_vectors) if spread is not None else None

    def __call__(self, batch: pa.Table) -> pa.Table:
        """user_id, one rank column per ranker and candidate set, ``failed_<ranker>`` (and, listwise,
        ``shown_order_<ranker>``: every answer listed the candidates in the order shown), fusion columns."""
        rows = batch.to_pylist()
        columns: dict[str, list[Any]] = {"user_id": [row["user_id"] for row in rows]}
        layouts = [json.loads(row["test_layout"]) for row in rows]
        for column, suffix in _candidate_sets(self.config).values():
            rankers = [r for r in (*LLM_RANKERS, *CONTROLS) if any(r + suffix in lay for lay in layouts)]
            for ranker in rankers:
                self._profile_ranks(rows, layouts, ranker + suffix, column, columns)
            candidates = [row[column] for row in rows]
            columns["embedding" + suffix] = self._embedding_ranks(rows, candidates).tolist()
            if self.likelihood:
                priors = np.array([[self._prior(i) for i in c] for c in candidates]).reshape(len(rows), -1)
                columns["item_prior" + suffix] = ranks_from_scores(priors).tolist()
            if self.cf is not None:
                cf = self._cf_scores(rows, candidates)
                columns["cf" + suffix] = ranks_from_scores(cf).tolist()
                if self.likelihood:
                    columns.update(self._fusion(rows, layouts, cf, column, suffix))
        columns["llm_calls"] = [tally(row, ["test"]) for row in rows]
        if self.spread is not None:
            columns.update(self._spreads(rows))
        return pa.table(columns)

    def _prior(self, item: str) -> float:
        prior = self.priors.get(item)
        return -np.inf if prior is None else float(prior)

    def _pmi(
        self, row: dict[str, Any], layout: dict[str, int], ranker: str, candidates: list[str]
    ) -> np.ndarray:
        start = layout[ranker]
        scores = row["test_scores"][start : start + len(candidates)]
        return pmi_scores(scores, [self.priors.get(item) for item in candidates])

    def _profile_ranks(
        self,
        rows: list[dict[str, Any]],
        layouts: list[dict[str, int]],
        ranker: str,
        column: str,
        columns: dict[str, list[Any]],
    ) -> None:
        """``ranker``'s rank column (users without that ranker rank last) and its failure counts."""
        ranks, failed, shown_order = [], [], []
        for row, layout in zip(rows, layouts, strict=True):
            candidates = row[column]
            if ranker not in layout:
                ranks.append(len(candidates) - 1)
                failed.append(True)
                shown_order.append(False)
            elif self.likelihood:
                scores = self._pmi(row, layout, ranker, candidates)
                ranks.append(int(positive_ranks(scores, 1)[0]))
                failed.append(not np.isfinite(scores).all())
            else:
                per = self.config.profiling.rank_permutations
                answers = row_answers(row, "test")[layout[ranker] : layout[ranker] + per]
                ranks.append(self._llm_rank(row, answers, candidates))
                failed.append(any(a.error is not None for a in answers))
                shown_order.append(all(a.value and in_shown_order(a.value["top"]) for a in answers))
        columns[ranker], columns[f"failed_{ranker}"] = ranks, failed
        if not self.likelihood:
            columns[f"shown_order_{ranker}"] = shown_order

    def _fusion(
        self,
        rows: list[dict[str, Any]],
        layouts: list[dict[str, int]],
        cf: np.ndarray,
        column: str,
        suffix: str,
    ) -> dict[str, list[Any]]:
        """Per weight: the fused test rank and (uniform set) each user's validation reciprocal rank."""
        profile = np.stack(
            [
                self._pmi(row, layout, "profile_refined" + suffix, row[column])
                if "profile_refined" + suffix in layout
                else np.full(len(row[column]), -np.inf)
                for row, layout in zip(rows, layouts, strict=True)
            ]
        )
        out: dict[str, list[Any]] = {}
        valid = self._valid_fusion_inputs(rows) if not suffix else None
        for index, weight in enumerate(FUSION_WEIGHTS):
            out[f"fusion_w{index}{suffix}"] = ranks_from_scores(fused(cf, profile, weight)).tolist()
            if valid is not None:
                out[f"fusion_valid_w{index}"] = [
                    float(
                        mean_reciprocal_rank(
                            positive_ranks_rows(fused(c[None], p[None], weight), np.array([k]))
                        )[0]
                    )
                    if len(p)
                    else float("nan")
                    for c, p, k in valid
                ]
        return out

    def _valid_fusion_inputs(self, rows: list[dict[str, Any]]) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """Per user: CF and refined-profile scores of their validation candidates, and their positives."""
        cf = [self._cf_scores([row], [row["valid_candidates"]])[0] for row in rows]
        profile = [
            np.array([np.nan if v is None else v for v in row["best_valid_scores"] or []]) for row in rows
        ]
        return [
            (c, np.where(np.isfinite(p), p, -np.inf), int(row["valid_positives"] or 1))
            if len(p) == len(c)
            else (c, p[:0], 1)
            for c, p, row in zip(cf, profile, rows, strict=True)
        ]

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

    def _llm_rank(self, row: dict[str, Any], answers: list[LLMAnswer], candidates: list[str]) -> int:
        size = len(candidates)
        depth = rank_depth(self.config.profiling, size)
        ranked = ranked_columns(answers, row["user_id"], self.config.seed, TEST_ROUND, size, depth)
        return positive_rank(ranked, size)  # a failed answer ranks nothing: the positive counts as a miss

    def _embedding_ranks(self, rows: list[dict[str, Any]], candidates: list[list[str]]) -> np.ndarray:
        """MiniLM cosine of the refined profile (else the mean history card) with each candidate card."""
        texts = [row["profile_refined"] for row in rows]
        profiles = self.embedder.embed([t or "-" for t in texts])
        users = np.stack(
            [
                profile if text or not row["history"] else self.card_vectors(row["history"]).mean(axis=0)
                for profile, text, row in zip(profiles, texts, rows, strict=True)
            ]
        )
        vectors = np.stack([self.card_vectors(items) for items in candidates])
        return ranks_from_scores(np.einsum("ud,ucd->uc", users, vectors))

    def _cf_scores(self, rows: list[dict[str, Any]], candidates: list[list[str]]) -> np.ndarray:
        """Dot products of the CF user and item embeddings, [users, candidates]; -inf for users the model
        never saw (they rank last) and for unknown items."""
        assert self.cf is not None
        user_index, users, item_index, items = self.cf
        found = pc.index_in(pa.array([row["user_id"] for row in rows]), value_set=user_index).to_numpy(
            zero_copy_only=False
        )
        flat = pa.array([i for c in candidates for i in c], pa.string())
        positions = pc.index_in(flat, value_set=item_index).to_numpy(zero_copy_only=False)
        size = len(candidates[0]) if candidates else 0
        known_user = ~np.isnan(found.astype(np.float64))
        known_item = ~np.isnan(positions.astype(np.float64)).reshape(len(rows), size)
        user_vectors = users[np.nan_to_num(found, nan=0).astype(np.int64)]
        item_vectors = items[np.nan_to_num(positions, nan=0).astype(np.int64)].reshape(len(rows), size, -1)
        scores = np.einsum("ud,ucd->uc", user_vectors, item_vectors)
        scores = np.where(known_item, scores, -np.inf)
        scores[~known_user] = -np.inf  # ties count against the positive: it ranks last
        return scores


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


def ranker_metrics(
    ranks_path: str, seed: int, depth: int, llm: LLMConfig, likelihood: bool
) -> dict[str, Any]:
    """Each ranker's metrics with intervals per candidate set, failed LLM answers, and the fusion weight
    chosen on validation (read in a task: numbers per user).

    Listwise LLM rankers return their top ``depth``: only Recall/NDCG@k with k <= depth are reported for
    them, with ``in_shown_order``: the users whose every answer listed the candidates in the order shown.
    """
    table = pq.read_table(ranks_path)
    keys = user_keys(table["user_id"].to_pylist())
    weight_index = _fusion_choice(table)
    out: dict[str, Any] = {
        "fusion_weight": FUSION_WEIGHTS[weight_index] if weight_index is not None else None
    }
    for name, (_, suffix) in CANDIDATE_SETS.items():
        rankers: dict[str, Any] = {}
        for ranker in (*LLM_RANKERS, *CONTROLS, "item_prior", "cf", "embedding", "fusion"):
            column = f"fusion_w{weight_index}{suffix}" if ranker == "fusion" else ranker + suffix
            if column not in table.column_names:
                continue
            listwise = ranker in LLM_RANKERS and not likelihood
            ks = [k for k in KS if k <= depth] if listwise else list(KS)
            sums = BootstrapSums(seed)
            sums.add(keys, rank_values(table[column].to_numpy(), ks))
            values = summary(sums, [m for k in ks for m in (f"recall@{k}", f"ndcg@{k}")])
            for count, prefix in (("failed", "failed_"), ("in_shown_order", "shown_order_")):
                if prefix + ranker + suffix in table.column_names:
                    values[count] = int(pc.sum(table[prefix + ranker + suffix]).as_py() or 0)
            rankers[ranker] = values
        if rankers:
            out["rankers" if name == "uniform" else "rankers_popularity_matched"] = rankers
    out["drift"] = drift_summary(table) if "spread_history" in table.column_names else None
    out["llm_calls"] = summed_tallies(table["llm_calls"].to_pylist(), llm, {"test": "ranker"})
    return out


def _fusion_choice(table: pa.Table) -> int | None:
    """The fusion weight with the best mean validation reciprocal rank (validation alone chooses it)."""
    means = [
        finite_mean(table[f"fusion_valid_w{i}"].to_pylist())
        for i in range(len(FUSION_WEIGHTS))
        if f"fusion_valid_w{i}" in table.column_names
    ]
    scored = [(m, -i) for i, m in enumerate(means) if m is not None]
    return -max(scored)[1] if scored else (0 if "fusion_w0" in table.column_names else None)


def test_depth(config: TailorMindConfig) -> int:
    """How deep the LLM rankers' test rankings go: every candidate (likelihood), or the listwise top k."""
    candidates = config.profiling.num_negatives + 1
    return (
        candidates if config.profiling.rank_mode == "likelihood" else rank_depth(config.profiling, candidates)
    )


def eval_metrics(computed: dict[str, Any], config: TailorMindConfig) -> dict[str, Any]:
    """``RUN/eval/metrics.json``: ``ranker_metrics``' figures with what they were measured on."""
    rankers = computed.get("rankers", {})
    depth, likelihood = test_depth(config), config.profiling.rank_mode == "likelihood"
    return {
        **computed,
        "rankers": rankers,
        "num_users": next(iter(rankers.values()))["num_users"] if rankers else 0,
        "split": "test",
        "candidates": config.profiling.num_negatives + 1,
        "rank_mode": config.profiling.rank_mode,
        "llm_rank_depth": depth,
        "note": (
            "likelihood: each candidate scored by PMI with the profile; a candidate that could not be "
            "scored ranks last (failed = users with one)"
            if likelihood
            else f"LLM rankers return their top {depth}, so their metrics stop at @{depth}; a positive "
            "ranked below that, or a failed LLM answer (failed = such users per ranker), counts as a miss"
        ),
    }


def positional_warnings(rankers: dict[str, Any], num_users: int) -> list[str]:
    """A warning per listwise ranker that mostly answered the order shown (too small a model to rank)."""
    return [
        f"the {name} ranker listed the candidates in the order shown for {positional} of {num_users} users: "
        "its ranks carry no signal of the profile (too small a model to rank listwise; try rank_mode "
        "likelihood)"
        for name in LLM_RANKERS
        if (positional := rankers.get(name, {}).get("in_shown_order", 0)) * 2 > num_users
    ]
