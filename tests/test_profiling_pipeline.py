import json

import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from jobs.pipeline import STAGES
from models.config import JudgeConfig
from tests.browser import file_url, page_media
from tests.conftest import REPO_ROOT

RANKERS = {"profile_initial", "profile_refined", "cf", "embedding"}


@pytest.mark.slow
@pytest.mark.browser
def test_demo_pipeline_runs_every_stage_then_resumes(
    ray_cluster, tiny_models, movielens_src, tmp_path, capsys, browser
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
        "profiling.max_users=2",
        "--set",
        "profiling.rounds=1",
        "--set",
        "judge.max_users=1",
        "--set",
        "generation.reflection_rounds=1",  # one revision per post (in generate and judge) keeps CI short
    ]
    assert main(args) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["rankers"]) == RANKERS
    for ranker in metrics["rankers"].values():
        assert ranker["num_users"] == 2
        assert set(ranker["ci95"]) == {"recall@10", "ndcg@10", "recall@20", "ndcg@20"}
        assert 0.0 <= ranker["recall@20"] <= 1.0
    refined = pq.read_table(tmp_path / "refine" / "profiles.parquet").to_pylist()
    assert len(refined) == 2 and all(1 <= len(r["valid_ranks"]) <= 2 for r in refined)
    captions = pq.read_table(tmp_path / "captions" / "captions.parquet")
    assert captions.num_rows > 100  # history + 2 x 100 candidates + CF items of 2 users
    profiles = pq.read_table(tmp_path / "profiles" / "profile_v0.parquet").to_pylist()
    assert all(p["text"].startswith("1. ") for p in profiles if not p["error"])
    post = json.loads(next((tmp_path / "generate").glob("*/post.json")).read_text())
    assert post["versions"] and (tmp_path / "generate" / "index.html").is_file()
    best = post["versions"][post["best_version"]]
    assert len(best["image_prompts"]) == 1 and len(best["video_prompts"]) == 1  # the demo: 1 image, 1 clip
    assert len(best["scores"]["clip"]) == 2
    # every post page the index links shows its image and plays its clip in a real browser
    links = page_media(browser, file_url(tmp_path / "generate" / "index.html")).links
    pages = [page_media(browser, link) for link in links]
    assert len(pages) == 2 and all(len(p.images) == 1 and len(p.videos) == 1 for p in pages)
    assert [p.unrendered() for p in pages] == [[], []]
    assert {tuple(p.videos[0]["size"]) for p in pages} == {(64, 64)}
    judged = json.loads((tmp_path / "judge" / "metrics.json").read_text())
    assert judged["num_users"] == 1 and judged["failed_posts"] == 0
    assert list(judged["methods"]) == JudgeConfig().methods  # ground truth, the system, four ablations
    for method in judged["methods"].values():
        assert set(method) == {"coherence", "novelty", "aesthetic", "hallucination"}
        assert 0.0 <= method["coherence"]["mean"] <= 2.5  # computed for every post, judge or not
    scores = pq.read_table(tmp_path / "judge" / "scores.parquet")
    assert scores.num_rows == 6 and judged["judge_requests"] == 12
    report = (tmp_path / "report.html").read_text()
    assert report == (tmp_path / "report" / "report.html").read_text() and "data:image/png;base64," in report
    assert report.count("data:video/webm;base64,") == 2
    shown = page_media(browser, file_url(tmp_path / "report.html"))
    assert shown.unrendered() == [] and len(shown.videos) == 2
    assert f"report: {tmp_path / 'report.html'}" in capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out.count("skipped (up to date)") == len(STAGES)
