"""``tailormind import movielens|lightgcn --src DIR --out DATASET``: public data as TailorBench datasets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult
from models.config import TailorMindConfig
from models.data import TailorBenchDataset, write_dataset
from models.data.lightgcn import import_lightgcn
from models.data.movielens import import_movielens
from models.data.synth import SynthSpec, write_synthetic

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun


def _movielens(src: Path) -> tuple[TailorBenchDataset, pa.Table | None]:
    return import_movielens(src), None


IMPORTERS = {"movielens": _movielens, "lightgcn": import_lightgcn}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Which dataset, where it is, where the TailorBench copy goes."""
    parser.add_argument("source", choices=sorted(IMPORTERS), help="dataset family")
    parser.add_argument("--src", required=True, type=Path, help="folder of the downloaded dataset")
    parser.add_argument("--out", required=True, type=Path, help="TailorBench dataset directory to write")


def run(args: argparse.Namespace, config: TailorMindConfig) -> int:
    """Convert and write; print the counts, and where quarantined input lines went."""
    dataset, quarantined = IMPORTERS[args.source](args.src)
    write_dataset(dataset, args.out)
    users = pc.count_distinct(dataset.interactions["user_id"]).as_py()
    print(
        f"wrote {args.out}: {users} users, {dataset.items.num_rows} items, "
        f"{dataset.interactions.num_rows} interactions"
        + ("" if dataset.has_timestamps else " (no timestamps: held-out items are drawn at random, seeded)")
    )
    print(dataset.report.summary())
    if quarantined is not None and quarantined.num_rows:
        (args.out / "quarantine").mkdir(exist_ok=True)
        path = args.out / "quarantine" / "lines.parquet"
        pq.write_table(quarantined, path)
        print(f"{quarantined.num_rows} malformed lines quarantined in {path}")
    return 0


def dataset_stage(pipeline: PipelineRun) -> StageResult:
    """Stage ``dataset``: the MovieLens import or the synthetic dataset of the config, in RUN/dataset."""
    data = pipeline.config.data
    if data.path:  # an existing dataset is read in place by the data stage
        return StageResult("dataset", Path(data.path), "", skipped=True, seconds=0.0)
    if data.movielens_src:
        src = Path(data.movielens_src)

        def build(out: Path) -> dict:
            dataset = import_movielens(src)
            write_dataset(dataset, out)
            return {"items": dataset.items.num_rows, "interactions": dataset.interactions.num_rows}

        return pipeline.runner.run("dataset", build, config={"movielens": str(src)}, inputs=[src])
    assert data.synth is not None
    spec = SynthSpec(seed=pipeline.config.seed, **data.synth.model_dump())
    return pipeline.runner.run("dataset", lambda out: write_synthetic(spec, out), config=spec.__dict__)


if __name__ == "__main__":
    raise SystemExit(stage_main("dataset", sys.argv[1:]))
