import base64
import json

from PIL import Image

from jobs.pipeline import PipelineRun
from jobs.report import report_stage
from jobs.stage_runner import StageRunner
from models.config import TailorMindConfig
from models.generation.pages import write_post
from models.generation.writer import GeneratedPost, PostVersion
from models.media import VideoClip
from models.report import read_run, render_report

METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
SCRIPT_TITLE = "<script>alert('x')</script> Night city"


def write_json(path, payload):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


def fake_run(run_dir):
    """The cf, eval and generate outputs (a post with PNG and WebM, a failed post) as stages write them."""
    cf = {m: 0.1 + i / 100 for i, m in enumerate(METRICS)} | {f"sampled_{m}": 0.6 for m in METRICS}
    write_json(run_dir / "cf" / "metrics.json", cf | {"epochs": 7, "train_seconds": 12.5, "num_users": 610})
    ranker = {m: 0.25 for m in METRICS} | {"ci95": {m: [0.0, 0.75] for m in METRICS}, "num_users": 4}
    drift = {"history": 0.8, "rounds": [0.5, 0.25], "refined": 0.25, "definition": "taste spread: entropy"}
    llm_ranker = ranker | {"failed": 1, "in_shown_order": 3}
    rankers = {"cf": ranker, "embedding": ranker, "profile_refined": llm_ranker}
    evaluation = {"rankers": rankers, "num_users": 4, "drift": drift, "candidates": 50}
    write_json(run_dir / "eval" / "metrics.json", evaluation)
    catalogue = {"questions": ["Which first? Horror / Crime / <Noir>"], "unlabelled": 1}
    write_json(run_dir / "catalogue" / "_stage.json", {"fingerprint": "c", "summary": catalogue})
    profiled = {"cold_start": {"users": 3, "failed": 1}}
    write_json(run_dir / "profiles" / "_stage.json", {"fingerprint": "p", "summary": profiled})
    generated = {"drift": {"history": 0.7, "posts": 0.1}}
    write_json(run_dir / "generate" / "_stage.json", {"fingerprint": "g", "summary": generated})
    image = Image.new("RGB", (8, 8), (200, 30, 30))
    draft = PostVersion("draft", "b", [], ["p"], [image], [0.5], 0.1)
    clip = VideoClip([Image.new("RGB", (16, 16), (0, 20 * i, 200)) for i in range(5)], fps=4)
    best = PostVersion(
        SCRIPT_TITLE,
        "line 1\nline <2>",
        ["city"],
        ["neon <street>"],
        [image],
        [1.25, 1.25],
        0.5,
        video_prompts=["rain <falls>"],
        videos=[clip],
    )
    posts = [
        GeneratedPost("u1", [], "idea", [], [draft, best]),
        GeneratedPost("u2", [], "idea", [], [], errors=["writer failed"]),
    ]
    write_summaries(run_dir / "generate", posts)
    calls = {
        "rank": {
            "role": "ranker",
            "model": "smollm2://135m-instruct",
            "requests": 12,
            "failed": 1,
            "retries": 3,
        }
    }
    write_json(run_dir / "refine" / "_stage.json", {"fingerprint": "f", "summary": {"llm_calls": calls}})
    counts = {"keep": 3, "edit": 0, "discard": 1}
    feedback = {"events": 5, "posts": counts, "profile_versions": 1, "top_profile_versions": {"ab12": counts}}
    write_json(run_dir / "feedback" / "metrics.json", feedback)


def write_summaries(generate, posts):
    """Each post's files and the generate stage's summary rows (``RUN/generate/posts.parquet``)."""
    import pyarrow.parquet as pq

    from models.generation.summary import summary_table

    pages = [write_post(generate, post).relative_to(generate).as_posix() for post in posts]
    table = summary_table(posts, pages, None, [(None, None)] * len(posts))
    pq.write_table(table, generate / "posts.parquet")


def write_judge(run_dir):
    coherence = {"mean": 0.612, "ci95": [0.5, 0.7], "n": 4}
    empty = {"mean": None, "ci95": [None, None], "n": 0}
    methods = {"full": {"coherence": coherence, "novelty": empty}, "no_rag": {"coherence": coherence}}
    write_json(run_dir / "judge" / "metrics.json", {"methods": methods, "num_users": 4})


def test_report_shows_every_table_escaped_text_and_embedded_images(tmp_path):
    fake_run(tmp_path)
    write_judge(tmp_path)
    page = render_report(read_run(tmp_path))
    assert "<td>recall@20</td><td>0.120</td><td>0.600</td>" in page  # CF: full and sampled
    assert "7 epochs trained in 12.5 s" in page
    assert "<td>cf</td>" + "<td>0.250 [0.000, 0.750]</td>" * 4 in page  # profiling with intervals
    assert "<td>full</td><td>0.612 [0.500, 0.700]</td><td>–</td>" in page  # judge, a metric without values
    assert "4 users judged." in page
    assert "1:49 reranking (test split)" in page and "1 positive + 49 negatives each." in page  # eval's
    assert "Failed LLM rankings (each counted as a miss): profile_refined 1." in page
    assert "in the order shown (no signal of the profile): profile_refined 3." in page
    assert "<td>u1</td>" in page and "<td>1.000</td>" in page  # best combined score of u1's 2 versions
    assert "No post: writer failed" in page
    assert "<td>ab12</td><td>4</td><td>0.750</td><td>0.000</td><td>0.250</td>" in page  # feedback rates
    assert "<td>all 1</td><td>4</td><td>0.750</td>" in page
    profiled = "<td>profiled</td><td>0.800</td><td>0.500</td><td>0.250</td><td>0.250</td><td>–</td>"
    assert (
        profiled in page
        and "<td>with posts</td><td>0.700</td><td>–</td><td>–</td><td>–</td><td>0.100</td>" in page
    )
    assert "<li>Which first? Horror / Crime / &lt;Noir&gt;</li>" in page and "most popular item: 1)" in page
    assert "profiled from their items and the curated default: 3 (1 failed)" in page
    assert "<script>" not in page and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; Night city" in page
    assert "line &lt;2&gt;" in page and 'alt="neon &lt;street&gt;"' in page
    png = (tmp_path / "generate" / "u1" / "image0.png").read_bytes()
    assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in page
    assert page.count("data:image/png;base64,") == 4  # the post image; recall, scores and versions plots
    assert "2 users: 1 with a post, 0 refused by the safety gate, 1 without one" in page
    webm = (tmp_path / "generate" / "u1" / "video0.webm").read_bytes()
    assert (
        f'<video src="data:video/webm;base64,{base64.b64encode(webm).decode()}" title="rain &lt;falls&gt;"'
        in page
    )
    assert "<td>refine</td><td>rank</td><td>ranker</td><td>smollm2://135m-instruct</td><td>12</td>" in page
    assert "not run" not in page


def test_missing_stages_read_as_not_run(tmp_path):
    fake_run(tmp_path)
    (tmp_path / "other").mkdir()
    page = render_report(read_run(tmp_path / "other"))
    assert page.count("not run") == 7  # cf, profiling, judge, posts, feedback, cold start, LLM calls
    assert render_report(read_run(tmp_path)).count("not run") == 1


def test_report_stage_publishes_run_report_and_reruns_when_judge_appears(tmp_path):
    fake_run(tmp_path)
    pipeline = PipelineRun(StageRunner(tmp_path), TailorMindConfig())
    first = report_stage(pipeline)
    page = (tmp_path / "report.html").read_text()
    assert not first.skipped and page == (first.path / "report.html").read_text()
    assert "0.250 [0.000, 0.750]" in page and "not run" in page
    assert report_stage(pipeline).skipped
    (tmp_path / "report.html").unlink()
    assert report_stage(pipeline).skipped and (tmp_path / "report.html").is_file()
    write_judge(tmp_path)
    assert not report_stage(pipeline).skipped
    assert "0.612 [0.500, 0.700]" in (tmp_path / "report.html").read_text()
    assert not list(tmp_path.glob(".report*"))  # no temporary file left behind


def test_a_report_of_500_posts_inlines_a_seeded_sample_and_links_the_rest(tmp_path):
    """The page stays small whatever the number of users: 20 posts in full, the others one click away
    through index pages of a fixed size; the same seed picks the same users and pages."""
    from models.generation.pages import index_pages, page_file, page_of, write_index, write_index_page
    from models.report import PostTotals

    image = Image.new("RGB", (64, 64), (20, 120, 200))
    posts = [
        GeneratedPost(
            f"user{i:03d}",
            [],
            "idea",
            [],
            [PostVersion(f"title {i}", "body", ["t"], ["p"], [image], [1.0], 0.2)],
        )
        for i in range(500)
    ]
    write_summaries(tmp_path / "generate", posts)
    import pyarrow.parquet as pq

    summary = pq.read_table(tmp_path / "generate" / "posts.parquet")
    pages = index_pages(summary.num_rows)
    for page in range(pages):
        links = [
            (r["user_id"], r["page"]) for r in summary.to_pylist() if page_of(r["user_id"], pages) == page
        ]
        write_index_page(tmp_path / "generate", page, pages, links)
    write_index(tmp_path / "generate", pages, summary.num_rows)
    totals, again = PostTotals(seed=3), PostTotals(seed=3)
    totals.add(summary)
    for start in range(0, summary.num_rows, 64):  # the same sample, folded block by block
        again.add(summary.slice(start, 64))
    assert totals.sampled() == again.sampled() and len(totals.sampled()) == 20
    other = PostTotals(seed=4)
    other.add(summary)
    assert other.sampled() != totals.sampled()
    page = render_report(read_run(tmp_path, totals))
    shown = [user for user, _ in totals.sampled()]
    assert all(f"<h3>User {user}</h3>" in page for user in shown)
    assert page.count("<h3>User user") == 20 and len(page.encode()) < 20 * 2**20
    assert 'href="generate/index.html"' in page and "500 users: 500 with a post" in page
    linked = set()
    for number in range(pages):
        html_page = (tmp_path / "generate" / page_file(number)).read_text()
        linked |= {f"user{i:03d}" for i in range(500) if f">user{i:03d}</a>" in html_page}
    assert linked == {post.user_id for post in posts}
