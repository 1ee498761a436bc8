"""``tailormind validate`` (check a dataset, quarantine bad rows) and the pipeline's data stage."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from jobs.pipeline import stage_main
from jobs.stage_runner import StageResult
from models.config import TailorMindConfig
from models.data import load_dataset
from runtime.cluster import connect
from runtime.dataset_validation import validate_dataset

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Dataset to check, where quarantined rows go, and strictness."""
    parser.add_argument("--data", required=True, help="dataset directory (TailorBench format)")
    parser.add_argument("--out", type=Path, help="write quarantined rows under OUT/quarantine/")
    parser.add_argument("--strict", action="store_true", help="fail on the first kind of bad row")


def run(args: argparse.Namespace, config: TailorMindConfig) -> int:
    """Validate and print the per-file counts."""
    quarantine = args.out / "quarantine" if args.out else None
    dataset = load_dataset(args.data, quarantine_dir=quarantine, strict=args.strict or config.data.strict)
    print(dataset.report.summary())
    if quarantine and quarantine.exists():
        print(f"quarantined rows written to {quarantine}")
    return 0


def data_stage(pipeline: PipelineRun) -> StageResult:
    """Stage ``data``: the validated dataset (split filled in), its quarantine and report, under RUN/data,
    validated by Ray tasks over blocks of rows (the driver holds counts)."""
    data_path = str(pipeline.results["dataset"].path)
    strict = pipeline.config.data.strict

    def build(out: Path) -> dict:
        connect(pipeline.config.ray, pipeline.runner.run_dir)
        report = validate_dataset(data_path, out, strict).to_dict()
        (out / "report.json").write_text(json.dumps(report, indent=2))
        return report

    inputs = [Path(data_path)] if "://" not in data_path else []
    return pipeline.runner.run(
        "data", build, config={"path": pipeline.runner.key(data_path), "strict": strict}, inputs=inputs
    )


if __name__ == "__main__":
    raise SystemExit(stage_main("data", sys.argv[1:]))
