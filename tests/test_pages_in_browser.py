"""Generated post pages and the run report opened in headless Chromium: every image and clip renders."""

import pytest
from PIL import Image

from models.generation.pages import write_index, write_index_page, write_post
from models.generation.writer import GeneratedPost, PostVersion
from models.media import VideoClip
from models.report import read_run, render_report
from tests.browser import file_url, page_media
from tests.test_report import fake_run

pytestmark = pytest.mark.browser


def _post(user_id: str, images: int, clips: int) -> GeneratedPost:
    version = PostVersion(f"Post of {user_id}", "body", ["tag"], [f"image {i}" for i in range(images)])
    version.images = [Image.new("RGB", (48, 32), (40 * i, 90, 160)) for i in range(images)]
    version.video_prompts = [f"clip {i}" for i in range(clips)]
    frames = [Image.new("RGB", (64, 48), (0, 25 * f, 200)) for f in range(9)]
    version.videos = [VideoClip(frames, fps=8) for _ in range(clips)]
    return GeneratedPost(user_id, [], "idea", [], [version])


def test_post_pages_linked_from_the_index_show_their_images_and_clips(browser, tmp_path):
    posts = [_post("u1", images=2, clips=1), _post("u/2", images=1, clips=0)]
    pages = [(post.user_id, write_post(tmp_path, post).relative_to(tmp_path).as_posix()) for post in posts]
    write_index(tmp_path, 1, len(posts))
    first = page_media(browser, file_url(tmp_path / "index.html")).links
    assert len(first) == 1  # the index's one page
    write_index_page(tmp_path, 0, 1, pages)
    root = f"/{tmp_path.name}/index.html"  # the index's first page, linked back from its pages
    links = [link for link in page_media(browser, first[0]).links if not link.endswith(root)]
    assert len(links) == 2
    seen = [page_media(browser, link) for link in links]
    assert sorted((len(page.images), len(page.videos)) for page in seen) == [(1, 0), (2, 1)]
    for page in seen:
        assert page.unrendered() == []
        assert {tuple(image["size"]) for image in page.images} == {(48, 32)}
        assert all(tuple(video["size"]) == (64, 48) for video in page.videos)


def test_the_run_report_renders_its_plots_images_and_clip(browser, tmp_path):
    fake_run(tmp_path)
    report = tmp_path / "report.html"
    report.write_text(render_report(read_run(tmp_path)))
    page = page_media(browser, file_url(report))
    assert len(page.images) == 4 and len(page.videos) == 1  # post image, three plots; the post's clip
    assert page.unrendered() == []
    assert page.videos[0]["size"] == [16, 16]


def test_a_clip_the_browser_cannot_decode_is_reported(browser, tmp_path):
    (tmp_path / "clip.webm").write_bytes(b"not a video")
    (tmp_path / "page.html").write_text('<video src="clip.webm" muted></video><img src="missing.png">')
    page = page_media(browser, file_url(tmp_path / "page.html"))
    assert [item["src"] for item in page.unrendered()] == ["missing.png", "clip.webm"]
