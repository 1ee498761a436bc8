"""Generated posts on disk: post JSON with every version's scores, PNG images, WebM clips, HTML pages."""

from __future__ import annotations

import html
import json
from pathlib import Path

from models.generation.writer import GeneratedPost
from models.media import webm_bytes


def write_post(out: Path, post: GeneratedPost) -> Path:
    """Write ``<out>/<user>/post.json``, the best version's PNGs and WebMs, and ``index.html`` (returned)."""
    folder = out / _slug(post.user_id)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "user_id": post.user_id,
        "styles": post.styles,
        "idea": post.idea,
        "exemplars": post.exemplars,
        "best_version": post.best,
        "versions": [v.to_dict() for v in post.versions],
        "errors": post.errors,
        "refusal": post.refusal,
    }
    (folder / "post.json").write_text(json.dumps(payload, indent=2))
    figures = []
    if post.best >= 0:
        best = post.versions[post.best]
        for index, (image, prompt) in enumerate(zip(best.images, best.image_prompts, strict=True)):
            image.save(folder / image_file(index))
            media = f'<img src="{image_file(index)}" alt="{html.escape(prompt)}">'
            figures.append(_figure(media, prompt))
        for index, (clip, prompt) in enumerate(zip(best.videos, best.video_prompts, strict=True)):
            (folder / video_file(index)).write_bytes(webm_bytes(clip))
            figures.append(_figure(video_tag(video_file(index), prompt), prompt))
        title, body = html.escape(best.title), html.escape(best.body).replace("\n", "<br>")
        tags = " ".join(f"#{html.escape(t)}" for t in best.tags)
        version = f"version {post.best + 1}/{len(post.versions)}"
        score = f"CLIPScore {best.clip} · relevance {best.relevance:.3f} · {version}"
    else:
        reason = post.refusal or "; ".join(post.errors)
        title, body, tags, score = "No post", html.escape(reason), "", ""
    page = folder / "index.html"
    page.write_text(
        f"<!doctype html><meta charset='utf-8'><title>{title}</title><h1>{title}</h1><p>{body}</p>"
        f"<p>{tags}</p>{''.join(figures)}<p><small>{html.escape(score)}</small></p>"
    )
    return page


def image_file(index: int) -> str:
    """The file name of a post's image ``index``."""
    return f"image{index}.png"


def video_file(index: int) -> str:
    """The file name of a post's video clip ``index``."""
    return f"video{index}.webm"


def video_tag(src: str, prompt: str) -> str:
    """A looping, muted, autoplaying ``<video>`` of a WebM clip, titled with its prompt."""
    return (
        f'<video src="{html.escape(src)}" title="{html.escape(prompt)}" '
        "controls loop muted autoplay playsinline></video>"
    )


def _figure(media: str, prompt: str) -> str:
    return f"<figure>{media}<figcaption>{html.escape(prompt)}</figcaption></figure>"


def write_index(out: Path, pages: dict[str, Path]) -> Path:
    """An index page linking every user's post page."""
    links = "".join(
        f'<li><a href="{html.escape(p.relative_to(out).as_posix())}">{html.escape(u)}</a></li>'
        for u, p in pages.items()
    )
    index = out / "index.html"
    index.write_text(
        f"<!doctype html><meta charset='utf-8'><title>Posts</title><h1>Posts</h1><ul>{links}</ul>"
    )
    return index


def _slug(user_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in user_id) or "user"
