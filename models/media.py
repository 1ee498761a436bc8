"""Media in and out: images as small PNG data URLs, video frames read from files, clips written as WebM."""

from __future__ import annotations

import base64
import binascii
import io
import os
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from models.url_roots import under_url_roots


class MediaError(ValueError):
    """A media file is missing or unreadable (reported per item, never fatal to a stage)."""


def png_data_url(image: Image.Image, max_side: int) -> str:
    """The image, downscaled so its longest side is at most ``max_side``, as a PNG data URL."""
    image = image.convert("RGB")
    image.thumbnail((max_side, max_side))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_data_url(path: str, max_side: int = 448) -> str:
    """A local image file as a downscaled PNG data URL."""
    try:
        with Image.open(path) as image:
            return png_data_url(image, max_side)
    except (OSError, UnidentifiedImageError) as exc:
        raise MediaError(f"image {path}: {exc}") from None


@dataclass
class VideoClip:
    """A short video: its frames in order and the rate they play at."""

    frames: list[Image.Image] = field(repr=False)
    fps: float

    def sample(self, count: int) -> list[Image.Image]:
        """``count`` frames spread evenly from the first to the last (all frames when there are fewer)."""
        if len(self.frames) <= count:
            return list(self.frames)
        return [self.frames[i] for i in np.linspace(0, len(self.frames) - 1, count).round().astype(int)]


def webm_bytes(clip: VideoClip) -> bytes:
    """The clip encoded as VP9 WebM, a format every browser plays."""
    import cv2

    width, height = clip.frames[0].size
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "clip.webm")
        with stderr_silenced():  # OpenCV prints that WebM has no tag for VP9 (any fourcc), then writes it
            writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*"VP90"), clip.fps, (width, height))
        if not writer.isOpened():
            raise MediaError("this OpenCV build cannot write VP9 WebM")
        for frame in clip.frames:
            rgb = np.asarray(frame.convert("RGB").resize((width, height)))
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        writer.release()
        return Path(path).read_bytes()


def video_end_frames(
    path: str, seconds: float = 8.0, frames_per_segment: int = 2, max_side: int = 448
) -> tuple[list[str], list[str]]:
    """(opening, ending): frames sampled evenly from the first and last ``seconds`` of a video."""
    with _open_video(path) as (capture, count, fps):
        span = min(count, max(1, round(seconds * fps)))
        opening = np.linspace(0, span - 1, frames_per_segment).round().astype(int)
        ending = np.linspace(count - span, count - 1, frames_per_segment).round().astype(int)
        return (
            [png_data_url(frame, max_side) for frame in _frames(capture, opening, path)],
            [png_data_url(frame, max_side) for frame in _frames(capture, ending, path)],
        )


def video_clip(path: str, frames: int) -> VideoClip:
    """``frames`` frames spread evenly over a whole video file, with its frame rate."""
    with _open_video(path) as (capture, count, fps):
        indices = np.unique(np.linspace(0, count - 1, frames).round().astype(int))
        return VideoClip(_frames(capture, indices, path), fps)


_STDERR_LOCK = threading.Lock()  # threads of one process (Serve's generate) must not interleave the swaps


@contextmanager
def stderr_silenced() -> Iterator[None]:
    """File descriptor 2 points at /dev/null inside: for native libraries that print with no setting."""
    with _STDERR_LOCK:
        sys.stderr.flush()
        saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(null)


@contextmanager
def _open_video(path: str) -> Iterator[tuple[Any, int, float]]:
    """(capture, frame count, fps) of a readable video file; MediaError when it is missing or empty."""
    import cv2

    if not Path(path).is_file():
        raise MediaError(f"video {path}: no such file")
    capture = cv2.VideoCapture(path)
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if count <= 0:
            raise MediaError(f"video {path}: no readable frames")
        yield capture, count, capture.get(cv2.CAP_PROP_FPS) or 25.0
    finally:
        capture.release()


def _frames(capture: Any, indices: np.ndarray, path: str) -> list[Image.Image]:
    import cv2

    frames = []
    for index in indices:
        capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
        ok, frame = capture.read()
        if not ok:
            raise MediaError(f"video {path}: frame {index} cannot be decoded")
        frames.append(Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
    return frames


MAX_REQUEST_PIXELS = 40_000_000
MAX_FETCH_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class MediaSources:
    """Where request media may come from besides data: URIs: folders, and http(s) URL roots."""

    folders: Sequence[Path]
    url_roots: Sequence[str]  # canonical, as models.url_roots.url_root gives them
    fetch_timeout_s: float


def request_image_data_url(uri: str, sources: MediaSources, max_side: int = 448) -> str:
    """An image a request names (see ``request_image``), as a small PNG data URL."""
    return png_data_url(request_image(uri, sources, max_side), max_side)


def request_image(uri: str, sources: MediaSources, max_side: int = 448) -> Image.Image:
    """An image a request names, as RGB with its longest side at most ``max_side``: a data: URI, a file
    or a URL inside ``sources``.

    Nothing else is read: a path that leaves every folder (``..``, symlinks) is refused, and so is a URL
    outside the URL roots, including one that a redirect leads to.
    """
    source: io.BytesIO | Path
    if uri.startswith("data:"):
        header, _, payload = uri.partition(",")
        if not header.endswith(";base64") or not header[5:].startswith("image/"):
            raise MediaError("an image data URI must look like data:image/png;base64,...")
        try:
            source = io.BytesIO(base64.b64decode(payload, validate=True))
        except binascii.Error:
            raise MediaError("an image data URI holds invalid base64") from None
    elif "://" in uri and not uri.startswith("file://"):
        source = io.BytesIO(fetch_bytes(uri, sources.url_roots, sources.fetch_timeout_s))
    else:
        source = _file_in_folders(uri, sources.folders)
    try:
        with Image.open(source) as image:
            if image.width * image.height > MAX_REQUEST_PIXELS:
                raise MediaError(f"image of {image.width}x{image.height} pixels is too large")
            rgb = image.convert("RGB")
            rgb.thumbnail((max_side, max_side))
            return rgb
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError):
        raise MediaError(f"{uri[:80]!r} is not a readable image") from None


def _file_in_folders(uri: str, folders: Sequence[Path]) -> Path:
    """The file a path or file:// URI names, once resolved, if it lies in one of ``folders``."""
    path = Path(uri.removeprefix("file://"))
    if not path.is_absolute() and folders:
        path = folders[0] / path  # relative names are relative to the first folder
    path = path.resolve()
    if not any(path.is_relative_to(folder.resolve()) for folder in folders):
        raise MediaError(f"{uri[:200]!r} is outside the configured media roots")
    if not path.is_file():
        raise MediaError(f"{uri[:200]!r}: no such file under the media roots")
    return path


def fetch_bytes(
    url: str, url_roots: Sequence[str], timeout_s: float, max_bytes: int = MAX_FETCH_BYTES
) -> bytes:
    """The body of ``url``, at most ``max_bytes``, if it and every redirect stay inside ``url_roots``."""
    if not under_url_roots(url, url_roots):
        raise MediaError(f"{url[:200]!r} is outside the configured URL roots; send the image as a data: URI")
    opener = urllib.request.build_opener(_RedirectsInsideRoots(url_roots))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            body = response.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        raise MediaError(f"{url[:200]!r}: the server answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise MediaError(f"{url[:200]!r} cannot be fetched: {getattr(exc, 'reason', exc)}") from None
    if len(body) > max_bytes:
        raise MediaError(f"{url[:200]!r} is larger than {max_bytes} bytes")
    return body


class _RedirectsInsideRoots(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL inside the roots."""

    def __init__(self, url_roots: Sequence[str]):
        self.url_roots = url_roots

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        """The redirected request, or a MediaError when it would leave the roots."""
        if not under_url_roots(newurl, self.url_roots):
            raise MediaError(f"a redirect to {newurl[:200]!r} leaves the configured URL roots")
        return super().redirect_request(req, fp, code, msg, headers, newurl)
