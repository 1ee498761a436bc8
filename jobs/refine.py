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

from jobs.llm_step import LIGHT, LLMStep
from jobs.pipeline import stage_main
from jobs.score_step import ScoreStep
from jobs.stage_runner import StageResult
from models.config import TailorMindConfig
from models.profiling.refinement_summary import summarise
from models.profiling.refiner import ROLES, play_round
from models.profiling.rounds import active_rows, publish_batch
from runtime.artifacts import FEEDBACK_EVIDENCE, PROFILES, REFINED, cards_ref, priors_ref
from runtime.cluster import connect
from runtime.refining import advance_batch, refiner_of, start_batch, with_feedback

if TYPE_CHECKING:
    from jobs.pipeline import PipelineRun


def refine_rounds(
    profiles: Path, cards: Any, feedback: Path, config: TailorMindConfig, work: Path, priors: Any = None
) -> list[Path]:
    """Run (or resume) the rounds into ``work/round_<r>/``, each user with their feedback (``feedback``:
    the feedback stage's evidence); returns the finished round folders."""
    import ray.data

    rounds = [work / f"round_{r}" for r in range(config.profiling.rounds + 1)]
    for round_index, folder in enumerate(rounds):
        if folder.is_dir():
            continue  # finished before a restart
        if round_index == 0:
            state = with_feedback(ray.data.read_parquet(str(profiles.resolve())), feedback).map_batches(
                start_batch,
                fn_kwargs={"cards": cards, "config": config, "priors": priors},
                batch_format="pyarrow",
                **LIGHT,
            )
        else:
            state = ray.data.read_parquet(str(rounds[round_index - 1].resolve())).map_batches(
                active_rows, batch_format="pyarrow", **LIGHT
            )
            if state.count() == 0:
                return rounds[:round_index]
        state = refine_round(state, cards, priors, config, round_index)
        tmp = work / f".round_{round_index}.tmp-{uuid.uuid4().hex[:8]}"
        state.write_parquet(str(tmp.resolve()))
        tmp.rename(folder)  # the round's checkpoint appears whole or not at all
    return rounds


def refine_round(state: Any, cards: Any, priors: Any, config: TailorMindConfig, round_index: int) -> Any:
    """One round over a Dataset of user states (``play_round``): each step's requests asked by a batch
    step, answered by an LLM chat or scoring step."""
    scored = refiner_of(cards, priors, config).scored
    settings = {"cards": cards, "priors": priors, "config": config, "round_index": round_index}

    def ask(states: Any, step: str) -> Any:
        kwargs = {**settings, "step": step}
        return states.map_batches(advance_batch, fn_kwargs=kwargs, batch_format="pyarrow", **LIGHT)

    def answer(states: Any, step: str) -> Any:
        role = getattr(config.llm, ROLES[step])
        llm_step = ScoreStep(step, role) if scored(step) else LLMStep(step, role, config.seed + round_index)
        return llm_step(states)

    return play_round(state, ask, answer)


def refine_stage(pipeline: PipelineRun) -> StageResult:
    """Pipeline stage ``refine``: RUN/refine/round_<r>/ checkpoints and RUN/refine/profiles.parquet/."""
    import ray
    import ray.data

    config = pipeline.config
    profiles = pipeline.results["profiles"].path / PROFILES
    captions = pipeline.results["captions"].path
    evidence = pipeline.results["feedback"].path / FEEDBACK_EVIDENCE

    def build(out: Path) -> dict[str, Any]:
        connect(config.ray, pipeline.runner.run_dir)
        priors = priors_ref(pipeline.results["priors"].path)
        rounds = refine_rounds(profiles, cards_ref(captions), evidence, config, out, priors)
        published = out / REFINED
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
    inputs = [pipeline.results[name].path for name in ("profiles", "captions", "priors", "feedback")]
    return pipeline.runner.run("refine", build, config=section, inputs=inputs, resumable=True)


if __name__ == "__main__":
    raise SystemExit(stage_main("refine", sys.argv[1:]))
