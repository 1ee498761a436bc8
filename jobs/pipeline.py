"""``tailormind run --config FILE --out RUN``: every stage of the pipeline in order, resumable."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from jobs.cli import main
from jobs.stage_runner import StageResult, StageRunner
from models.config import TailorMindConfig
from models.errors import TailorMindError


@dataclass
class PipelineRun:
    """What a stage needs: the runner, the config, and the results of the stages before it."""

    runner: StageRunner
    config: TailorMindConfig
    results: dict[str, StageResult] = field(default_factory=dict)


# Stage name -> "module:function" taking a PipelineRun and returning its StageResult, in pipeline order.
STAGES: dict[str, str] = {
    "dataset": "jobs.dataset:dataset_stage",
    "data": "jobs.data:data_stage",
    "cf": "jobs.cf:cf_stage",
    "topk": "jobs.topk:topk_stage",
    "cohort": "jobs.cohort:cohort_stage",
    "feedback": "jobs.feedback:feedback_stage",
    "captions": "jobs.captions:captions_stage",
    "catalogue": "jobs.catalogue:catalogue_stage",
    "priors": "jobs.priors:priors_stage",
    "profiles": "jobs.profiles:profiles_stage",
    "refine": "jobs.refine:refine_stage",
    "eval": "jobs.eval:evaluate_stage",
    "generate": "jobs.generate:generate_stage",
    "judge": "jobs.judge:judge_stage",
    "report": "jobs.report:report_stage",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Run directory and which stages to redo."""
    parser.add_argument("--out", required=True, type=Path, help="run directory (RUN/<stage>/ per stage)")
    parser.add_argument("--force", action="store_true", help="rerun every stage even when up to date")
    parser.add_argument(
        "--from", dest="from_stage", choices=list(STAGES), help="rerun this stage and later ones"
    )
    parser.add_argument("--until", choices=list(STAGES), help="stop after this stage")
    parser.add_argument(
        "--only", choices=list(STAGES), help="run this stage alone, on the finished outputs of earlier ones"
    )


def stages_to_force(force: bool, from_stage: str | None) -> set[str] | bool:
    """``--force`` forces all stages; ``--from S`` forces S and every stage after it."""
    if force:
        return True
    if from_stage is None:
        return set()
    names = list(STAGES)
    return set(names[names.index(from_stage) :])


def stage_function(name: str) -> Callable[[PipelineRun], StageResult]:
    """The function that runs stage ``name``."""
    module, function = STAGES[name].split(":")
    return getattr(importlib.import_module(module), function)


def run_pipeline(
    run_dir: Path,
    config: TailorMindConfig,
    force: set[str] | bool = False,
    until: str | None = None,
    only: str | None = None,
) -> PipelineRun:
    """Run the stages in order; up-to-date stages are skipped, so a crashed run resumes where it stopped.

    With ``only``, the stages before it are not run: their finished outputs in ``run_dir`` are used.
    """
    pipeline = PipelineRun(StageRunner(run_dir, force=force), config)
    for name in STAGES:
        if only is not None and name != only:
            if list(STAGES).index(name) > list(STAGES).index(only):
                break
            if name == "dataset" and config.data.path:
                pipeline.results[name] = stage_function(name)(pipeline)  # read in place: nothing to run
            else:
                pipeline.results[name] = pipeline.runner.finished(name)
            continue
        pipeline.results[name] = stage_function(name)(pipeline)
        if name in (until, only):
            break
    return pipeline


def run(args: argparse.Namespace, config: TailorMindConfig) -> int:
    """Run and print one line per stage: ran or skipped, seconds, output directory."""
    if not (config.data.path or config.data.movielens_src or config.data.synth):
        raise TailorMindError(
            "the config names no dataset: set data.path (a TailorBench directory), data.movielens_src "
            "(a MovieLens folder to import) or a data.synth section (see configs/demo.yaml)."
        )
    pipeline = run_pipeline(
        args.out, config, stages_to_force(args.force, args.from_stage), args.until, args.only
    )
    ran = sum(r.seconds for r in pipeline.results.values())
    print(f"{len(pipeline.results)} stages in {ran:.0f} s; outputs are under {args.out.resolve()}")
    if "report" in pipeline.results:
        print(f"report: {pipeline.runner.run_dir / 'report.html'}")
    return 0


def stage_main(name: str, argv: list[str]) -> int:
    """``python -m jobs.<name> --config FILE --out RUN``: that stage alone, on the earlier stages' outputs."""
    return main(["run", "--only", name, *argv])


if __name__ == "__main__":
    raise SystemExit(main(["run", *sys.argv[1:]]))
