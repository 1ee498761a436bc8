"""Generated posts on disk: post JSON with every version's scores, PNG images, an HTML page, an index."""

from __future__ import annotations

import html
import json
from pathlib import Path

from models.generation.writer import GeneratedPost


def write_post(out: Path, post: GeneratedPost) -> Path:
    """Write ``<out>/<user>/post.json``, the best version's PNGs and ``index.html``; returns the page."""
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
    }
    (folder / "post.json").write_text(json.dumps(payload, indent=2))
    figures = []
    if post.best >= 0:
        best = post.versions[post.best]
        for index, (image, prompt) in enumerate(zip(best.images, best.image_prompts, strict=True)):
            image.save(folder / f"image{index}.png")
            figures.append(
                f'<figure><img src="image{index}.png" alt="{html.escape(prompt)}">'
                f"<figcaption>{html.escape(prompt)}</figcaption></figure>"
            )
        title, body = html.escape(best.title), html.escape(best.body).replace("\n", "<br>")
        tags = " ".join(f"#{html.escape(t)}" for t in best.tags)
        version = f"version {post.best + 1}/{len(post.versions)}"
        score = f"CLIPScore {best.clip} · relevance {best.relevance:.3f} · {version}"
    else:
        title, body, tags, score = "No post", html.escape("; ".join(post.errors)), "", ""
    page = folder / "index.html"
    page.write_text(
        f"<!doctype html><meta charset='utf-8'><title>{title}</title><h1>{title}</h1><p>{body}</p>"
        f"<p>{tags}</p>{''.join(figures)}<p><small>{html.escape(score)}</small></p>"
    )
    return page


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
