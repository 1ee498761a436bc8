"""Stage ``profiles``: each cohort user's initial preference profile (paper eq. 9) from history + CF items."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.llm_pass import run_structured
from jobs.ray_cluster import connect
from jobs.stage_runner import StageResult
from models.config import TailorMindConfig
from models.data import EncodedInteractions, encode_interactions, load_dataset
from models.llm.prompts import PROFILE, profile_text
from models.profiling.cohort import Cohort, cf_recommendations, select_cohort
from models.profiling.evidence import item_card
from models.profiling.initial import profile_request

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun


@dataclass
class ProfilingInputs:
    """The cohort, every item as a card (title + captions), and the CF recommendations of each user."""

    encoded: EncodedInteractions
    cohort: Cohort
    user_ids: list[str]
    cards: list[str]  # by item index
    recommended: dict[str, list[int]]


def profiling_inputs(pipeline: PipelineRun) -> ProfilingInputs:
    """Load the validated data, captions and (when the pipeline has one) the CF top-K output."""
    config = pipeline.config
    dataset = load_dataset(pipeline.results["data"].path)
    encoded = encode_interactions(dataset)
    cohort = select_cohort(encoded, config.profiling.max_users, config.profiling.history_items, config.seed)
    captions = pq.read_table(pipeline.results["captions"].path / "captions.parquet").to_pylist()
    by_item = {row["item_id"]: row for row in captions}
    cards = [item_card(item, by_item.get(item["item_id"])) for item in dataset.items.to_pylist()]
    user_ids = encoded.user_ids.take(pa.array(cohort.users))
    topk = pq.ParquetDataset(pipeline.results["topk"].path).read() if "topk" in pipeline.results else None
    recommended = cf_recommendations(topk, user_ids, encoded.item_ids, config.profiling.cf_items)
    return ProfilingInputs(encoded, cohort, user_ids.to_pylist(), cards, recommended)


def profile_requests(inputs: ProfilingInputs, config: TailorMindConfig) -> list[dict[str, Any]]:
    """One profiler request per cohort user: history (most recent first) and CF items, within the budget."""
    return [
        profile_request(
            user_id,
            [inputs.cards[i] for i in history],
            [inputs.cards[i] for i in inputs.recommended.get(user_id, [])],
            config.profiling.evidence_chars,
        )
        for user_id, history in zip(inputs.user_ids, inputs.cohort.history, strict=True)
    ]


def write_profiles(path: Path, rows: list[dict[str, Any]]) -> None:
    """Profiles as Parquet: user_id, preferences (JSON), text, error."""
    schema = pa.schema(
        [
            ("user_id", pa.string()),
            ("preferences", pa.string()),
            ("text", pa.string()),
            ("error", pa.string()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def profiles_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``profiles``: RUN/profiles/profile_v0.parquet."""
    config = pipeline.config

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray)
        inputs = profiling_inputs(pipeline)
        answers = run_structured(profile_requests(inputs, config), config.llm.profiler, seed=config.seed)
        rows = []
        for user_id in inputs.user_ids:
            answer = answers[user_id]
            preferences = answer.value["preferences"] if answer.value else []
            rows.append(
                {
                    "user_id": user_id,
                    "preferences": json.dumps(preferences),
                    "text": profile_text(preferences),
                    "error": answer.error,
                }
            )
        write_profiles(out / "profile_v0.parquet", rows)
        return {"users": len(rows), "failed": sum(1 for r in rows if r["error"]), "prompt": PROFILE.key}

    section = {"profiler": config.llm.profiler, "profiling": config.profiling, "seed": config.seed}
    inputs = [
        pipeline.results[name].path for name in ("data", "captions", "topk") if name in pipeline.results
    ]
    return pipeline.runner.run("profiles", build, config=section, inputs=inputs)
