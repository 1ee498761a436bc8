import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from jobs.pipeline import STAGES
from tests.browser import file_url, page_media
from tests.conftest import REPO_ROOT

LLM_RANKERS = {"profile_initial", "profile_refined", "profile_swapped"}  # own profiles, the swapped control
RANKERS = {*LLM_RANKERS, "item_prior", "cf", "embedding", "fusion"}
TINY_CHAT = ("model_source=tiny://chat", "dtype=float32", "cpus_per_engine=1")  # test_llm_step's deployment
CANDIDATES = ("valid_candidates", "test_candidates", "test_candidates_popular")
JUDGED = ("ground_truth", "full", "no_reflection")  # the user's test item, the system and one ablation


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(1500)  # every stage of the demo, with its engines (the suite's default is 900 s)
def test_demo_pipeline_runs_every_stage_then_resumes(
    ray_cluster, llm_apps_released, tiny_models, movielens_src, tmp_path, capsys, browser
):
    args = [
        "run",
        "--config",
        str(REPO_ROOT / "configs" / "demo.yaml"),
        "--out",
        str(tmp_path),
        "--set",
        f"data.movielens_src={movielens_src}",
        "--set",
        "cf.epochs=2",
        "--set",
        "cf.batch_size=4096",  # 2 epochs of 22 steps (the default's 16,384-pair steps would make it 6)
        "--set",
        "profiling.max_users=2",
        "--set",
        "profiling.rounds=1",
        "--set",
        "profiling.num_negatives=19",  # 20 candidates: SmolLM2 ranks them in seconds, 100 take minutes
        "--set",
        "judge.max_users=1",
        "--set",
        f"judge.methods=[{','.join(JUDGED)}]",  # the other ablations differ only in briefs (test_judging)
        "--set",
        "coldstart.min_history=21",  # MovieLens users have 20+ ratings: those with 20 are cold-start here
        "--set",
        "coldstart.max_users=1",
        "--set",
        "generation.reflection_rounds=1",  # one revision per post (in generate and judge) keeps CI short
        # SmolLM2 (the demo's real model) profiles, ranks and refines; item summaries, posts and judging go
        # to the tiny chat model, which answers in seconds where SmolLM2 takes minutes on 2 cores.
        *(f"--set=llm.{role}.{key}" for role in ("summarizer", "writer", "judge") for key in TINY_CHAT),
    ]
    # Up to the profiles, then the refine stage alone as a module (as ray job submit runs it), killed once
    # its first round is checkpointed; the full run then resumes it from that round.
    assert main([*args, "--until", "profiles"]) == 0
    killed_after = refine_killed_after_round_0(args)
    round_0 = killed_after / "round_0"
    checkpoint = sorted((p.name, p.stat().st_mtime_ns) for p in round_0.iterdir())
    assert main(args) == 0
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "refine" / "round_0").iterdir()) == (
        checkpoint
    )  # round 0 was not run again
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["rankers"]) == RANKERS
    listwise = metrics["rank_mode"] == "listwise"
    for name, ranker in metrics["rankers"].items():
        assert ranker["num_users"] == 2
        llm = name in LLM_RANKERS
        assert ("failed" in ranker) == llm  # counted per LLM ranker
        assert ("in_shown_order" in ranker) == (llm and listwise)  # a listwise answer can copy the order
        assert set(ranker["ci95"]) == {"recall@10", "ndcg@10", "recall@20", "ndcg@20"}
        assert 0.0 <= ranker["recall@20"] <= 1.0
    drift = metrics["drift"]  # taste spread of the histories and of each round's profiles
    assert 0 <= drift["history"] <= 1 and 1 <= len(drift["rounds"]) <= 2 and "entropy" in drift["definition"]
    refined = pq.read_table(tmp_path / "refine" / "profiles.parquet").to_pylist()
    assert len(refined) == 2 and all(1 <= len(r["valid_ranks"]) <= 2 for r in refined)
    tokens = json.loads((tmp_path / "refine" / "_stage.json").read_text())["summary"]["tokens_per_round"]
    assert tokens and all(0 <= r["cached_tokens"] <= r["prompt_tokens"] for r in tokens)  # vLLM's, via Serve
    cohort = pq.read_table(tmp_path / "cohort" / "users.parquet").to_pylist()
    ranked = {item for user in cohort for column in CANDIDATES for item in user[column]}
    priors = pq.read_table(tmp_path / "priors" / "items.parquet")  # scored once per ranked item, no more
    assert sorted(priors["item_id"].to_pylist()) == sorted(ranked) and priors["prior"].null_count == 0
    captions = pq.read_table(tmp_path / "captions" / "items.parquet")
    captioned = captions.filter(captions["captioned"])
    assert captioned.num_rows > 40  # history + 2 x 20 candidates + CF items of 2 users
    assert captions.num_rows == 9742 and all(captions["card"].to_pylist())  # every item has a card
    assert (tmp_path / "logs" / "ray").is_dir()  # engine, worker and Serve logs, off the console
    profiles = pq.read_table(tmp_path / "profiles" / "profile_v0.parquet").to_pylist()
    assert all(p["text"].startswith("1. ") for p in profiles if not p["error"])
    assert any(not p["error"] for p in profiles)  # SmolLM2, the demo's real profiler, answered in the schema
    clusters = pq.read_table(tmp_path / "catalogue" / "clusters.parquet")
    assert clusters.num_rows == 12 and all(clusters["label"].to_pylist())  # named once, by the summarizer
    catalogue = json.loads((tmp_path / "catalogue" / "_stage.json").read_text())["summary"]
    assert len(catalogue["questions"]) == 4 and catalogue["llm_calls"]["label"]["requests"] == 12
    (cold,) = pq.read_table(tmp_path / "profiles" / "cold_start.parquet").to_pylist()  # 1 user, 20 ratings
    assert len(cold["history"]) == 20 and (cold["text"].startswith("1. ") or cold["error"])
    profiled = json.loads((tmp_path / "profiles" / "_stage.json").read_text())["summary"]
    assert profiled["cold_start"]["users"] == 1 and profiled["users"] == 2
    post = json.loads(next((tmp_path / "generate").glob("*/post.json")).read_text())
    assert post["versions"] and (tmp_path / "generate" / "index.html").is_file()
    best = post["versions"][post["best_version"]]
    assert len(best["image_prompts"]) == 1 and len(best["video_prompts"]) == 1  # the demo: 1 image, 1 clip
    assert len(best["scores"]["clip"]) == 2
    assert best["safety"]["checked"] == ["terms", "image", "video"]  # the demo's gate passed it
    generated = json.loads((tmp_path / "generate" / "_stage.json").read_text())["summary"]
    assert generated["refused_by_safety"] == 0 and generated["safety_flags"] >= 0
    assert 0 <= generated["drift"]["history"] <= 1 and set(generated["drift"]) == {"history", "posts"}
    # every post page the index links shows its image and plays its clip in a real browser
    (first,) = page_media(browser, file_url(tmp_path / "generate" / "index.html")).links  # its one page
    linked = [link for link in page_media(browser, first).links if not link.endswith("/generate/index.html")]
    pages = [page_media(browser, link) for link in linked]  # the posts (the page links back to the index)
    assert len(pages) == 2 and all(len(p.images) == 1 and len(p.videos) == 1 for p in pages)
    assert [p.unrendered() for p in pages] == [[], []]
    assert {tuple(p.videos[0]["size"]) for p in pages} == {(64, 64)}
    judged = json.loads((tmp_path / "judge" / "metrics.json").read_text())
    # The tiny random writer can miss the post schema even after its retries: that post is counted as
    # failed and not judged (a real model does not; the pipeline must account for it either way).
    failed = judged["failed_posts"]
    assert judged["num_users"] == 1 and failed < len(JUDGED)
    assert tuple(judged["methods"]) == JUDGED
    for method in judged["methods"].values():
        assert set(method) == {"coherence", "novelty", "aesthetic", "hallucination"}
        coherence = method["coherence"]  # computed for every written post, judge or not
        assert (coherence["n"], coherence["mean"]) == (0, None) or 0.0 <= coherence["mean"] <= 2.5
    assert sum(m["coherence"]["n"] for m in judged["methods"].values()) == len(JUDGED) - failed
    scores = pq.read_table(tmp_path / "judge" / "scores.parquet")
    assert scores.num_rows == len(JUDGED) and judged["judge_requests"] == 2 * (len(JUDGED) - failed)
    report = (tmp_path / "report.html").read_text()
    assert "<td>profiles</td><td>profile</td><td>profiler</td><td>smollm2://135m-instruct</td>" in report
    assert report == (tmp_path / "report" / "report.html").read_text() and "data:image/png;base64," in report
    assert report.count("data:video/webm;base64,") == 2
    assert "<h3>Profile drift</h3>" in report and "their items and the curated default: 1 (" in report
    shown = page_media(browser, file_url(tmp_path / "report.html"))
    assert shown.unrendered() == [] and len(shown.videos) == 2
    assert f"report: {tmp_path / 'report.html'}" in capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out.count("up to date, skipped") == len(STAGES)


def refine_killed_after_round_0(args: list[str]) -> Path:
    """``python -m jobs.refine`` on the test cluster, SIGKILLed once round 0 is checkpointed; its work dir."""
    import ray

    out = Path(args[args.index("--out") + 1])
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    command = [sys.executable, "-m", "jobs.refine", *args[1:]]
    job = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and job.poll() is None:
            rounds = list(out.glob(".refine.partial-*/round_0"))
            if rounds:
                job.kill()
                job.wait()
                work = rounds[0].parent
                assert not (work / "round_1").exists(), "refine finished round 1 before it could be killed"
                return work
            time.sleep(0.05)
    finally:
        job.kill()
    raise AssertionError(f"python -m jobs.refine never checkpointed round 0 (exit {job.returncode})")
