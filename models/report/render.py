"""The run report as one self-contained HTML page: ``report.html.jinja`` over a ``ReportData``.

Jinja2 escapes every string from a run's files; plots and the sampled posts' images are embedded as base64
PNG data URIs and their clips as WebM data URIs, so the page can be copied or mailed on its own. Its size
is bounded: the posts shown in full are a fixed-size sample, every other post is a link away.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

import jinja2
from matplotlib.figure import Figure

from models.generation.pages import video_tag
from models.report.data import RANKING_METRICS, Interval, ReportData
from models.report.posts import SCORE_BINS, PostSummary

TEMPLATE = Path(__file__).with_name("report.html.jinja")
# C0 control characters other than tab and newline: invalid in HTML text, and tiny models emit them.
_CONTROL_CHARACTERS = dict.fromkeys(c for c in range(32) if chr(c) not in "\t\n")


def render_report(data: ReportData, title: str = "TailorMind run report") -> str:
    """The whole report page."""
    environment = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    environment.filters.update(number=number, text=clean)
    environment.globals.update(interval_table=interval_table, trace_rounds=trace_rounds)
    template = environment.from_string(TEMPLATE.read_text())
    return template.render(
        title=title,
        data=data,
        view=tables(data),
        figures=figures(data),
        posts=[post_view(post) for post in data.posts or []],
    ).strip()


def tables(data: ReportData) -> dict[str, Any]:
    """The rows of the report's plain tables, formatted."""
    cf = data.cf or {}
    view: dict[str, Any] = {
        "cf_rows": [[m, number(cf.get(m)), number(cf.get(f"sampled_{m}"))] for m in RANKING_METRICS],
        "llm_rows": [
            [
                stage,
                step,
                c["role"],
                c.get("model") or "",
                str(c["requests"]),
                str(c["failed"]),
                str(c["retries"]),
            ]
            for stage, steps in data.llm_calls.items()
            for step, c in steps.items()
        ],
        "judge_note": judge_note(data.judge_facts),
    }
    kinds = sorted({kind for counts in data.degenerate.values() for kind in counts})
    view["degenerate"] = (
        ["stage", *kinds],
        [[stage, *(str(counts.get(kind, 0)) for kind in kinds)] for stage, counts in data.degenerate.items()],
    )
    if data.feedback and data.feedback.get("profile_versions"):
        feedback = data.feedback
        view["feedback_rows"] = [feedback_row(f"all {feedback['profile_versions']}", feedback["posts"])] + [
            feedback_row(version, counts) for version, counts in feedback["top_profile_versions"].items()
        ]
    if data.drift:
        view["drift"] = drift_table(data.drift, data.post_drift)
    return view


def interval_table(label: str, rankers: dict[str, dict[str, Interval]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a rows x metrics table of ``mean [low, high]`` cells."""
    metrics = list(dict.fromkeys(metric for values in rankers.values() for metric in values))
    rows = [[name, *(interval_cell(values.get(m)) for m in metrics)] for name, values in rankers.items()]
    return [label, *metrics], rows


def trace_rounds(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """A refined user's rounds: index, 0-based mean validation rank, profile, its gradient, kept."""
    gradients = trace.get("round_gradients") or []
    return [
        {
            "index": index,
            "rank": rank,
            "profile": profile,
            "gradient": gradients[index] if index < len(gradients) else "",
            "kept": trace.get("best_round") == index,
        }
        for index, (profile, rank) in enumerate(
            zip(trace["round_profiles"], trace["valid_ranks"], strict=False)
        )
    ]


def drift_table(drift: dict[str, Any], posts: dict[str, Any] | None) -> tuple[list[str], list[list[str]]]:
    """Mean taste spread of the histories, of the profiles round by round, and of the posts."""
    rounds = drift["rounds"]
    header = ["users", "history", *(f"round {n}" for n in range(len(rounds))), "best profile", "post"]
    rows = [
        ["profiled", number(drift["history"]), *(number(v) for v in rounds), number(drift["refined"]), "–"]
    ]
    if posts:
        rows.append(
            ["with posts", number(posts["history"]), *["–"] * len(rounds), "–", number(posts["posts"])]
        )
    return header, rows


def feedback_row(version: str, counts: dict[str, int]) -> list[str]:
    """One profile version's posts with feedback and its keep, edit and discard rates."""
    total = sum(counts.values())
    return [version, str(total), *(number(counts[action] / total) for action in ("keep", "edit", "discard"))]


def judge_note(facts: dict[str, Any]) -> str:
    """How many users were judged, by what, and how many judge requests failed."""
    note = f"{facts.get('num_users')} users judged"
    if "judge_model" in facts:
        note += f" by {facts['judge_model']}"
    if "judge_requests" in facts:
        note += f"; {facts.get('judge_failures', 0)} of {facts['judge_requests']} judge requests failed"
    note += "."
    if facts.get("indistinct"):
        note += (
            f" Every user's generated posts got the same {', '.join(facts['indistinct'])} from every method:"
            " those columns do not tell the methods apart."
        )
    return note


def figures(data: ReportData) -> dict[str, str]:
    """The plots as PNG data URIs: Recall@20 per ranker, best scores over every post, sampled versions."""
    found = {}
    if data.profiling:
        found["recall"] = png_uri(recall_plot(data.profiling, data.candidates - 1))
    if data.post_totals is not None and data.post_totals.with_post:
        found["scores"] = png_uri(scores_plot(data.post_totals.histogram))
    if data.posts:
        found["versions"] = png_uri(versions_plot(data.posts))
    return found


def post_view(post: PostSummary) -> dict[str, Any]:
    """One sampled post as the template shows it: the best version, its media as data URIs, every version's
    scores line."""
    best = post.versions[post.best] if post.best >= 0 else None
    media = [(png_uri(png), prompt, "image") for png, prompt in post.images]
    media += [
        (f"data:video/webm;base64,{base64.b64encode(webm).decode('ascii')}", prompt, "video")
        for webm, prompt in post.videos
    ]
    return {
        "post": post,
        "best": best,
        "media": [
            {"uri": uri, "prompt": prompt, "kind": kind, "video": video_tag(uri, prompt)}
            for uri, prompt, kind in media
        ],
        "scores": [scores_line(version) for version in post.versions],
        "row": post_row(post),
    }


def post_row(post: PostSummary) -> list[str]:
    """A sampled post's row: title, versions, best combined score, mean CLIPScore, relevance, flags."""
    flags = str(post.safety_flags)
    if post.best < 0:
        title = "(refused by the safety gate)" if post.refusal else "(no post)"
        return [post.user_id, title, str(len(post.versions)), "–", "–", "–", flags]
    best = post.versions[post.best]
    scores = best["scores"]
    clip = scores["clip"]  # one CLIPScore per image and per clip
    return [
        post.user_id,
        best["title"],
        str(len(post.versions)),
        number(scores["combined"]),
        number(sum(clip) / len(clip) if clip else None),
        number(scores["relevance"]),
        flags,
    ]


def scores_line(version: dict[str, Any]) -> str:
    """One version's scores on a line (and why the safety gate withheld it)."""
    scores = version["scores"]
    clip = ", ".join(number(c) for c in scores["clip"]) or "–"
    line = f"combined {number(scores['combined'])}, CLIPScore {clip}, relevance {number(scores['relevance'])}"
    if version.get("withheld"):
        line += (
            " (withheld by the safety gate: "
            + "; ".join(f["reason"] for f in version["safety"]["flags"])
            + ")"
        )
    return line


def recall_plot(rankers: dict[str, dict[str, Interval]], negatives: int = 99) -> bytes:
    """Each ranker's Recall@20 with its 95% interval as an error bar."""
    names = [name for name, values in rankers.items() if "recall@20" in values]
    values = [rankers[name]["recall@20"] for name in names]
    errors = [[v.mean - v.low for v in values], [v.high - v.mean for v in values]]
    figure = Figure(figsize=(max(4.0, 1.1 * len(names) + 2), 3.4))
    axes = figure.subplots()
    bars = axes.bar(names, [v.mean for v in values], yerr=errors, capsize=4, color="#3b7dd8")
    axes.bar_label(bars, fmt="%.3f", fontsize=8)
    axes.tick_params(axis="x", labelrotation=20, labelsize=8)
    axes.set_ylabel(f"Recall@20 (1:{negatives})")
    axes.set_title("Recall@20 per ranker, 95% intervals")
    return figure_png(figure)


def scores_plot(histogram: list[int]) -> bytes:
    """How the best versions' combined scores spread over every post."""
    figure = Figure(figsize=(6.0, 3.0))
    axes = figure.subplots()
    axes.stairs(histogram, SCORE_BINS, fill=True, color="#3b7dd8")
    axes.set_xlabel("combined score of the best version")
    axes.set_ylabel("posts")
    axes.set_title("Every post's best score")
    return figure_png(figure)


def versions_plot(posts: list[PostSummary]) -> bytes:
    """The combined score of each version of the sampled posts, one line per user."""
    figure = Figure(figsize=(6.0, 3.4))
    axes = figure.subplots()
    for post in posts:
        scores = [version["scores"]["combined"] for version in post.versions]
        axes.plot(range(1, len(scores) + 1), scores, marker="o", label=post.user_id)
    axes.set_xlabel("version (each after the first is a reflection round)")
    axes.set_ylabel("combined score")
    axes.set_title("Post versions of the sampled users")
    axes.set_xticks(range(1, max((len(post.versions) for post in posts), default=1) + 1))
    if len(posts) <= 12:
        axes.legend(title="user", fontsize=8)
    return figure_png(figure)


def figure_png(figure: Figure) -> bytes:
    """The figure as PNG bytes."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def png_uri(png: bytes) -> str:
    """PNG bytes as a data URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def clean(value: object) -> str:
    """``value`` as text without control characters or unpaired surrogates (escaping is the template's)."""
    return str(value).encode("utf-8", "replace").decode("utf-8").translate(_CONTROL_CHARACTERS)


def number(value: object, digits: int = 3) -> str:
    """A metric value with ``digits`` decimals, or a dash when missing or not finite."""
    return f"{value:.{digits}f}" if isinstance(value, int | float) and math.isfinite(value) else "–"


def interval_cell(interval: Interval | None) -> str:
    """``mean [low, high]``, or a dash."""
    if interval is None or not math.isfinite(interval.mean):
        return "–"
    return f"{number(interval.mean)} [{number(interval.low)}, {number(interval.high)}]"
