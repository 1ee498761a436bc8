"""Generated posts on disk: post JSON with every version's scores, PNG images, WebM clips, HTML pages."""

from __future__ import annotations

import html
import json
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from models.media import webm_bytes

if TYPE_CHECKING:
    from models.generation.writer import GeneratedPost


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


INDEX_PAGE_SIZE = 500  # links per page of the posts' index (pages of about this size, by hash)
INDEX_DIR = "index"


def index_pages(users: int) -> int:
    """How many index pages ``users`` posts take."""
    return max(1, -(-users // INDEX_PAGE_SIZE))


def page_of(user_id: str, pages: int) -> int:
    """The index page that links a user's post (a hash: the same page in every run with as many pages)."""
    return zlib.crc32(user_id.encode()) % pages


def page_file(page: int) -> str:
    """An index page's file, relative to the generate stage's folder."""
    return f"{INDEX_DIR}/page-{page:05d}.html"


def write_index_page(out: Path, page: int, pages: int, links: list[tuple[str, str]]) -> Path:
    """One page of the index: links to its users' post pages (sorted by user), and to its neighbours."""
    path = out / page_file(page)
    path.parent.mkdir(parents=True, exist_ok=True)
    items = "".join(
        f'<li><a href="../{html.escape(href)}">{html.escape(user)}</a></li>' for user, href in sorted(links)
    )
    nav = " · ".join(
        f'<a href="{Path(page_file(p)).name}">{label}</a>'
        for p, label in ((page - 1, "previous"), (page + 1, "next"))
        if 0 <= p < pages
    )
    path.write_text(
        f"<!doctype html><meta charset='utf-8'><title>Posts, page {page + 1} of {pages}</title>"
        f"<h1>Posts, page {page + 1} of {pages}</h1><p>{nav} · <a href='../index.html'>all pages</a></p>"
        f"<ul>{items}</ul><p>{nav}</p>"
    )
    return path


def with_index_page(batch: pa.Table, pages: int) -> pa.Table:
    """Post rows (user_id, page) with the index page that links each (``page_of``)."""
    index = [page_of(user, pages) for user in batch["user_id"].to_pylist()]
    return batch.append_column("index_page", pa.array(index, pa.int64()))


def write_index_group(group: pa.Table, out: str, pages: int) -> pa.Table:
    """The index page of a group of post rows that share one (``with_index_page``); its link count."""
    page = int(group["index_page"][0].as_py())
    links = list(zip(group["user_id"].to_pylist(), group["page"].to_pylist(), strict=True))
    write_index_page(Path(out), page, pages, links)
    return pa.table({"index_page": [page], "users": [len(links)]})


def write_index(out: Path, pages: int, users: int) -> Path:
    """The index's first page: how many posts and pages there are, and where each page is (its size is
    fixed: at most ``INDEX_PAGE_SIZE`` page links, the first and last pages otherwise)."""
    shown = range(pages) if pages <= INDEX_PAGE_SIZE else [0, pages - 1]
    links = "".join(f'<li><a href="{page_file(p)}">page {p + 1}</a></li>' for p in shown)
    index = out / "index.html"
    index.write_text(
        f"<!doctype html><meta charset='utf-8'><title>Posts</title><h1>Posts</h1>"
        f"<p>{users} posts on {pages} pages of about {INDEX_PAGE_SIZE}; a user's page is page "
        f"crc32(user id) mod {pages}.</p><ul>{links}</ul>"
    )
    return index


def _slug(user_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in user_id) or "user"
