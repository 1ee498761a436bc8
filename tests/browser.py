"""What a page shows in headless Chromium: each image and video, whether it rendered, and the page's links."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Every <video> has decoded a frame (readyState >= HAVE_CURRENT_DATA) or failed.
VIDEOS_SETTLED = "[...document.querySelectorAll('video')].every(v => v.readyState >= 2 || v.error)"
MEDIA = """() => ({
  images: [...document.images].map(i => ({
    src: i.getAttribute('src').slice(0, 40), rendered: i.complete && i.naturalWidth > 0,
    size: [i.naturalWidth, i.naturalHeight]})),
  videos: [...document.querySelectorAll('video')].map(v => ({
    src: v.getAttribute('src').slice(0, 40), rendered: v.readyState >= 2 && !v.error,
    size: [v.videoWidth, v.videoHeight], error: v.error && v.error.code})),
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
})"""


@dataclass
class PageMedia:
    """The images, videos and link targets of one loaded page."""

    images: list[dict[str, Any]]
    videos: list[dict[str, Any]]
    links: list[str]

    def unrendered(self) -> list[dict[str, Any]]:
        """Images and videos the browser could not show."""
        return [item for item in self.images + self.videos if not item["rendered"]]


def page_media(browser: Any, url: str) -> PageMedia:
    """Load ``url`` in a new tab, wait for its videos, and read what rendered."""
    page = browser.new_page()
    try:
        page.goto(url, wait_until="load")
        page.wait_for_function(VIDEOS_SETTLED, timeout=20_000)
        return PageMedia(**page.evaluate(MEDIA))
    finally:
        page.close()


def file_url(path: Path) -> str:
    """The ``file://`` URL of a local page."""
    return path.resolve().as_uri()
