"""The run report: one self-contained HTML page of a run's CF, profiling, judge and generation results.

Every string that comes from a run's files is HTML-escaped; plots and post images are embedded as
base64 PNG data URIs and post clips as WebM data URIs, so the page can be copied or mailed on its own.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from models.generation.pages import image_file, video_file, video_tag

RANKING_METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20")
NOT_RUN = "<p><em>not run</em></p>"
# C0 control characters other than tab and newline: invalid in HTML text, and tiny models emit them.
_CONTROL_CHARACTERS = dict.fromkeys(c for c in range(32) if chr(c) not in "\t\n")
_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em}"
    "td{text-align:right}td:first-child{text-align:left}th{background:#f3f3f3}"
    "article{border-top:1px solid #ddd;margin-top:1.5em}.body{white-space:pre-wrap;overflow-wrap:anywhere}"
    "figure{display:inline-block;margin:.5em}figcaption{font-size:small;max-width:256px}"
)


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% confidence interval."""

    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class PostSummary:
    """One user's generated post: every version as ``post.json`` holds it, the best one's PNGs and WebMs."""

    user_id: str
    versions: list[dict[str, Any]]
    best: int
    images: list[tuple[bytes, str]]
    errors: list[str]
    videos: list[tuple[bytes, str]] = field(default_factory=list)
    refusal: str | None = None  # why the safety gate refused every version

    @property
    def safety_flags(self) -> int:
        """Safety flags raised over all versions."""
        return sum(len(v.get("safety", {}).get("flags", [])) for v in self.versions)


@dataclass(frozen=True)
class RunResults:
    """What the report shows; ``None`` marks a stage that did not run."""

    cf: dict[str, Any] | None
    profiling: dict[str, dict[str, Interval]] | None
    profiling_users: int | None
    judge: dict[str, dict[str, Interval]] | None
    judge_facts: dict[str, Any]
    posts: list[PostSummary] | None
    ranker_failures: dict[str, int] = field(default_factory=dict)  # failed LLM answers, counted as misses
    ranker_in_shown_order: dict[str, int] = field(default_factory=dict)  # users answered in shown order
    profiling_note: str = ""
    llm_calls: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> step -> counts and model
    feedback: dict[str, Any] | None = None  # the feedback stage's metrics
    cold_start: dict[str, Any] | None = None  # the catalogue's questions and default, cold-start profiles
    drift: dict[str, Any] | None = None  # mean taste spread of histories and of each round's profiles
    post_drift: dict[str, Any] | None = None  # mean taste spread of the posted users' histories and posts


def read_run(run_dir: Path) -> RunResults:
    """The results of the stages found under ``run_dir`` (cf, eval, judge, generate)."""
    cf = _read_json(run_dir / "cf" / "metrics.json")
    evaluation = _read_json(run_dir / "eval" / "metrics.json")
    judge = _read_json(run_dir / "judge" / "metrics.json")
    generate = run_dir / "generate"
    return RunResults(
        cf=cf,
        profiling=ranker_intervals(evaluation) if evaluation else None,
        profiling_users=evaluation.get("num_users") if evaluation else None,
        ranker_failures=_ranker_counts(evaluation, "failed"),
        ranker_in_shown_order=_ranker_counts(evaluation, "in_shown_order"),
        profiling_note=(evaluation or {}).get("note", ""),
        drift=(evaluation or {}).get("drift"),
        post_drift=((_read_json(generate / "_stage.json") or {}).get("summary") or {}).get("drift"),
        judge=judge_intervals(judge) if judge else None,
        judge_facts={k: v for k, v in judge.items() if k != "methods"} if judge else {},
        posts=read_posts(generate) if generate.is_dir() else None,
        llm_calls=read_llm_calls(run_dir),
        feedback=_read_json(run_dir / "feedback" / "metrics.json"),
        cold_start=read_cold_start(run_dir),
    )


def _ranker_counts(evaluation: dict[str, Any] | None, count: str) -> dict[str, int]:
    """One count (failed, in_shown_order) of each ranker that has it in the eval metrics."""
    rankers = (evaluation or {}).get("rankers", {})
    return {name: int(values[count]) for name, values in rankers.items() if count in values}


def read_cold_start(run_dir: Path) -> dict[str, Any] | None:
    """The catalogue stage's questions and the profiles stage's cold-start counts (None: not run)."""
    catalogue = _read_json(run_dir / "catalogue" / "_stage.json")
    if catalogue is None:
        return None
    profiles = _read_json(run_dir / "profiles" / "_stage.json") or {}
    return {
        "questions": catalogue["summary"]["questions"],
        "unlabelled": catalogue["summary"]["unlabelled"],
        "profiled": profiles.get("summary", {}).get("cold_start"),
    }


LLM_STAGES = ("captions", "catalogue", "profiles", "refine", "eval", "generate", "judge")


def read_llm_calls(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Each LLM stage's calls per step (role, model, requests, failed, retries), from its stage marker."""
    calls = {}
    for stage in LLM_STAGES:
        marker = _read_json(run_dir / stage / "_stage.json")
        if marker and marker.get("summary", {}).get("llm_calls"):
            calls[stage] = marker["summary"]["llm_calls"]
    return calls


def ranker_intervals(evaluation: dict[str, Any]) -> dict[str, dict[str, Interval]]:
    """Each ranker's 1:99 metrics with their intervals, from ``RUN/eval/metrics.json``."""
    return {
        ranker: {
            metric: Interval(values[metric], *values["ci95"][metric])
            for metric in RANKING_METRICS
            if metric in values
        }
        for ranker, values in evaluation["rankers"].items()
    }


def judge_intervals(judge: dict[str, Any]) -> dict[str, dict[str, Interval]]:
    """Each method's judge metrics with their intervals (NaN where no value was finite), from the judge."""
    return {
        method: {name: Interval(*_floats(value["mean"], *value["ci95"])) for name, value in metrics.items()}
        for method, metrics in judge["methods"].items()
    }


def read_posts(generate_dir: Path) -> list[PostSummary]:
    """Every ``<user>/post.json`` under the generate stage's output, with its best version's PNGs."""
    return [_read_post(path) for path in sorted(generate_dir.glob("*/post.json"))]


def render_report(results: RunResults, title: str = "TailorMind run report") -> str:
    """The whole report page."""
    sections = [
        ("Collaborative filtering (test split)", cf_section(results.cf)),
        ("Profiling: 1:99 reranking (test split)", profiling_section(results)),
        ("Judge", judge_section(results)),
        ("Generated posts", generation_section(results.posts)),
        ("Feedback on posts", feedback_section(results.feedback)),
        ("Cold start", cold_start_section(results.cold_start)),
        ("LLM calls", llm_calls_section(results.llm_calls)),
    ]
    body = "".join(f"<section><h2>{text(name)}</h2>{content}</section>" for name, content in sections)
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{text(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{text(title)}</h1>{body}</body></html>"
    )


def llm_calls_section(calls: dict[str, dict[str, Any]]) -> str:
    """The model behind each role, and per stage and step the requests, failed answers and retries."""
    if not calls:
        return NOT_RUN
    rows = [
        [
            stage,
            step,
            c["role"],
            c.get("model") or "",
            str(c["requests"]),
            str(c["failed"]),
            str(c["retries"]),
        ]
        for stage, steps in calls.items()
        for step, c in steps.items()
    ]
    note = "<p>failed = answers still unparsed or invalid after the role's retries.</p>"
    return table(["stage", "step", "role", "model", "requests", "failed", "retries"], rows) + note


def cf_section(cf: dict[str, Any] | None) -> str:
    """CF model metrics, full ranking and sampled 1:99, with the training figures."""
    if cf is None:
        return NOT_RUN
    rows = [
        [metric, number(cf.get(metric)), number(cf.get(f"sampled_{metric}"))] for metric in RANKING_METRICS
    ]
    facts = (
        f"{cf.get('epochs')} epochs trained in {number(cf.get('train_seconds'), 1)} s; "
        f"{cf.get('num_users')} users, {cf.get('num_items')} items, {cf.get('num_tags')} tags."
    )
    return table(["metric", "full ranking", "sampled 1:99"], rows) + f"<p>{text(facts)}</p>"


def profiling_section(results: RunResults) -> str:
    """Each ranker's metrics with 95% intervals and a Recall@20 bar plot."""
    if results.profiling is None:
        return NOT_RUN
    plot = png_image(recall_plot(results.profiling), "Recall@20 per ranker with 95% intervals")
    users = f"<p>{text(results.profiling_users)} test users, 1 positive + 99 negatives each."
    if results.ranker_failures:
        failed = ", ".join(f"{name} {count}" for name, count in results.ranker_failures.items())
        users += f" Failed LLM rankings (each counted as a miss): {text(failed)}."
    if any(results.ranker_in_shown_order.values()):
        listed = ", ".join(f"{name} {count}" for name, count in results.ranker_in_shown_order.items())
        users += (
            " Users whose LLM ranking only listed the candidates in the order shown (no signal of the "
            f"profile): {text(listed)}."
        )
    if results.profiling_note:
        users += f" {text(results.profiling_note)}"
    drift = drift_table(results.drift, results.post_drift)
    return interval_table("ranker", results.profiling) + users + "</p>" + plot + drift


def drift_table(drift: dict[str, Any] | None, posts: dict[str, Any] | None) -> str:
    """Profile drift: the mean taste spread of the histories, of the profiles round by round, and of posts."""
    if not drift:
        return ""
    header = [
        "users",
        "history",
        *(f"round {n}" for n in range(len(drift["rounds"]))),
        "best profile",
        "post",
    ]
    blanks = ["–"] * len(drift["rounds"])
    rows = [
        [
            "profiled",
            number(drift["history"]),
            *(number(v) for v in drift["rounds"]),
            number(drift["refined"]),
            "–",
        ]
    ]
    if posts:
        rows.append(["with posts", number(posts["history"]), *blanks, "–", number(posts["posts"])])
    return f"<h3>Profile drift</h3>{table(header, rows)}<p>{text(drift['definition'])}</p>"


def judge_section(results: RunResults) -> str:
    """Each method's judge metrics with 95% intervals, and how many users and judge requests there were."""
    if results.judge is None:
        return NOT_RUN
    return interval_table("method", results.judge) + f"<p>{text(_judge_note(results.judge_facts))}</p>"


def generation_section(posts: list[PostSummary] | None) -> str:
    """Per-user table of the best versions, a plot of every version's score, then the posts."""
    if posts is None:
        return NOT_RUN
    if not posts:
        return "<p><em>no posts</em></p>"
    rows = [_post_row(post) for post in posts]
    header = ["user", "title", "versions", "best combined", "CLIPScore", "relevance", "safety flags"]
    plot = png_image(versions_plot(posts), "combined score of each version, per user")
    return table(header, rows) + plot + "".join(post_article(post) for post in posts)


def feedback_section(feedback: dict[str, Any] | None) -> str:
    """Kept, edited and discarded posts in all and for the profile versions with the most posts (the last
    action on each post counts)."""
    if feedback is None:
        return NOT_RUN
    if not feedback["profile_versions"]:
        return "<p><em>no feedback events in the store (feedback.uri)</em></p>"
    rows = [feedback_row(f"all {feedback['profile_versions']}", feedback["posts"])]
    rows += [feedback_row(version, counts) for version, counts in feedback["top_profile_versions"].items()]
    header = ["profile version", "posts with feedback", "keep rate", "edit rate", "discard rate"]
    return table(header, rows) + f"<p>{feedback['events']} events in the store.</p>"


def feedback_row(version: str, counts: dict[str, int]) -> list[str]:
    """One profile version's posts with feedback and its keep, edit and discard rates."""
    total = sum(counts.values())
    return [version, str(total), *(number(counts[action] / total) for action in ("keep", "edit", "discard"))]


def cold_start_section(cold_start: dict[str, Any] | None) -> str:
    """The clarifying questions new users are asked, and how many users were profiled from few items."""
    if cold_start is None:
        return NOT_RUN
    questions = "".join(f"<li>{text(question)}</li>" for question in cold_start["questions"])
    profiled = cold_start["profiled"] or {"users": 0, "failed": 0}
    return (
        "<p>Clarifying questions (each choice a taste cluster of the catalogue; clusters the LLM gave no "
        f"name, so named after their most popular item: {cold_start['unlabelled']}):</p><ol>{questions}</ol>"
        f"<p>Users with few interactions profiled from their items and the curated default: "
        f"{profiled['users']} ({profiled['failed']} failed).</p>"
    )


def post_article(post: PostSummary) -> str:
    """One user's best post: title, body, tags, images, clips and every version's scores."""
    heading = f"<h3>User {text(post.user_id)}</h3>"
    if post.best < 0:
        reason = post.refusal or "; ".join(post.errors)
        return f"<article>{heading}<p>No post: {text(reason)}</p></article>"
    best = post.versions[post.best]
    tags = " ".join(f"#{text(tag)}" for tag in best.get("tags", []))
    media = [(png_image(png, prompt), prompt) for png, prompt in post.images] + [
        (video_tag(f"data:video/webm;base64,{base64.b64encode(webm).decode('ascii')}", prompt), prompt)
        for webm, prompt in post.videos
    ]
    figures = "".join(
        f"<figure>{tag}<figcaption>{text(prompt)}</figcaption></figure>" for tag, prompt in media
    )
    scores = "".join(
        f"<li>version {index + 1}: {text(_scores_line(version))}</li>"
        for index, version in enumerate(post.versions)
    )
    return (
        f"<article>{heading}<h4>{text(best['title'])}</h4><p class='body'>{text(best['body'])}</p>"
        f"<p>{tags}</p>{figures}<ul>{scores}</ul></article>"
    )


def interval_table(row_label: str, intervals: dict[str, dict[str, Interval]]) -> str:
    """Rows x metrics table of ``mean [low, high]`` cells."""
    metrics = list(dict.fromkeys(metric for values in intervals.values() for metric in values))
    rows = [
        [name, *(_interval_cell(values.get(metric)) for metric in metrics)]
        for name, values in intervals.items()
    ]
    return table([row_label, *metrics], rows)


def table(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table with escaped cells."""
    head = "".join(f"<th>{text(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{text(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def recall_plot(rankers: dict[str, dict[str, Interval]]) -> bytes:
    """PNG bar plot of each ranker's Recall@20 with its 95% interval as an error bar."""
    names = [name for name, values in rankers.items() if "recall@20" in values]
    values = [rankers[name]["recall@20"] for name in names]
    errors = [[v.mean - v.low for v in values], [v.high - v.mean for v in values]]
    figure = Figure(figsize=(max(4.0, 1.1 * len(names) + 2), 3.4))
    axes = figure.subplots()
    bars = axes.bar(names, [v.mean for v in values], yerr=errors, capsize=4, color="#3b7dd8")
    axes.bar_label(bars, fmt="%.3f", fontsize=8)
    axes.set_ylabel("Recall@20 (1:99)")
    axes.set_title("Recall@20 per ranker, 95% intervals")
    return figure_png(figure)


def versions_plot(posts: list[PostSummary]) -> bytes:
    """PNG line plot of the combined score of each version, one line per user."""
    figure = Figure(figsize=(6.0, 3.4))
    axes = figure.subplots()
    for post in posts:
        scores = [version["scores"]["combined"] for version in post.versions]
        axes.plot(range(1, len(scores) + 1), scores, marker="o", label=post.user_id)
    axes.set_xlabel("version (each after the first is a reflection round)")
    axes.set_ylabel("combined score")
    axes.set_title("Post versions per user")
    axes.set_xticks(range(1, max(len(post.versions) for post in posts) + 1))
    axes.legend(title="user", fontsize=8)
    return figure_png(figure)


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def png_image(png: bytes, alt: str) -> str:
    """An ``<img>`` holding the PNG as a base64 data URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{text(alt)}">'


def text(value: object) -> str:
    """``value`` as HTML text: escaped, without control characters or unpaired surrogates."""
    clean = str(value).encode("utf-8", "replace").decode("utf-8").translate(_CONTROL_CHARACTERS)
    return html.escape(clean)


def number(value: object, digits: int = 3) -> str:
    """A metric value with ``digits`` decimals, or a dash when missing or not finite."""
    return f"{value:.{digits}f}" if isinstance(value, int | float) and math.isfinite(value) else "–"


def _interval_cell(interval: Interval | None) -> str:
    if interval is None or not math.isfinite(interval.mean):
        return "–"
    return f"{number(interval.mean)} [{number(interval.low)}, {number(interval.high)}]"


def _judge_note(facts: dict[str, Any]) -> str:
    note = f"{facts.get('num_users')} users judged"
    if "judge_model" in facts:
        note += f" by {facts['judge_model']}"
    if "judge_requests" in facts:
        note += f"; {facts.get('judge_failures', 0)} of {facts['judge_requests']} judge requests failed"
    return note + "."


def _post_row(post: PostSummary) -> list[str]:
    flags = str(post.safety_flags)
    if post.best < 0:
        title = "(refused by the safety gate)" if post.refusal else "(no post)"
        return [post.user_id, title, str(len(post.versions)), "–", "–", "–", flags]
    best = post.versions[post.best]
    scores = best["scores"]
    clip = scores["clip"]  # one CLIPScore per image and per clip
    mean_clip = sum(clip) / len(clip) if clip else None
    return [
        post.user_id,
        best["title"],
        str(len(post.versions)),
        number(scores["combined"]),
        number(mean_clip),
        number(scores["relevance"]),
        flags,
    ]


def _scores_line(version: dict[str, Any]) -> str:
    scores = version["scores"]
    clip = ", ".join(number(c) for c in scores["clip"]) or "–"
    line = f"combined {number(scores['combined'])}, CLIPScore {clip}, relevance {number(scores['relevance'])}"
    if version.get("withheld"):
        reasons = "; ".join(flag["reason"] for flag in version["safety"]["flags"])
        line += f" (withheld by the safety gate: {reasons})"
    return line


def _read_post(path: Path) -> PostSummary:
    post = json.loads(path.read_text())
    best = post["best_version"]
    version = post["versions"][best] if best >= 0 else {}
    # models.generation.pages saves the best version's media beside post.json
    images = _read_media(path.parent, image_file, version.get("image_prompts", []))
    videos = _read_media(path.parent, video_file, version.get("video_prompts", []))
    return PostSummary(
        post["user_id"], post["versions"], best, images, post.get("errors", []), videos, post.get("refusal")
    )


def _read_media(folder: Path, name: Callable[[int], str], prompts: list[str]) -> list[tuple[bytes, str]]:
    files = [(folder / name(index), prompt) for index, prompt in enumerate(prompts)]
    return [(file.read_bytes(), prompt) for file, prompt in files if file.is_file()]


def _floats(*values: float | None) -> list[float]:
    return [math.nan if value is None else float(value) for value in values]


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None
