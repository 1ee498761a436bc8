"""Reading item media for the VLM: images as small PNG data URLs, video frames from its two ends."""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


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


def video_end_frames(
    path: str, seconds: float = 8.0, frames_per_segment: int = 2, max_side: int = 448
) -> tuple[list[str], list[str]]:
    """(opening, ending): frames sampled evenly from the first and last ``seconds`` of a video."""
    import cv2

    if not Path(path).is_file():
        raise MediaError(f"video {path}: no such file")
    capture = cv2.VideoCapture(path)
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        if count <= 0:
            raise MediaError(f"video {path}: no readable frames")
        span = min(count, max(1, round(seconds * fps)))
        opening = np.linspace(0, span - 1, frames_per_segment).round().astype(int)
        ending = np.linspace(count - span, count - 1, frames_per_segment).round().astype(int)
        return _frames(capture, opening, max_side, path), _frames(capture, ending, max_side, path)
    finally:
        capture.release()


def _frames(capture, indices: np.ndarray, max_side: int, path: str) -> list[str]:
    import cv2

    urls = []
    for index in indices:
        capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
        ok, frame = capture.read()
        if not ok:
            raise MediaError(f"video {path}: frame {index} cannot be decoded")
        urls.append(png_data_url(Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)), max_side))
    return urls


MAX_REQUEST_PIXELS = 40_000_000


def request_image_data_url(uri: str, roots: Sequence[Path], max_side: int = 448) -> str:
    """An image a request names, as a small PNG data URL: a data: URI, or a file under one of ``roots``.

    Nothing else is read: no URL is fetched, and a path that leaves every root (``..``, symlinks) is refused.
    """
    if uri.startswith("data:"):
        header, _, payload = uri.partition(",")
        if not header.endswith(";base64") or not header[5:].startswith("image/"):
            raise MediaError("an image data URI must look like data:image/png;base64,...")
        try:
            source: io.BytesIO | Path = io.BytesIO(base64.b64decode(payload, validate=True))
        except binascii.Error:
            raise MediaError("an image data URI holds invalid base64") from None
    elif "://" in uri and not uri.startswith("file://"):
        raise MediaError(f"{uri[:80]!r}: this server fetches no URLs; send the image as a data: URI")
    else:
        path = Path(uri.removeprefix("file://"))
        if not path.is_absolute() and roots:
            path = roots[0] / path  # relative names are relative to the first root
        path = path.resolve()
        if not any(path.is_relative_to(root.resolve()) for root in roots):
            raise MediaError(f"{uri[:200]!r} is outside the configured media roots")
        if not path.is_file():
            raise MediaError(f"{uri[:200]!r}: no such file under the media roots")
        source = path
    try:
        with Image.open(source) as image:
            if image.width * image.height > MAX_REQUEST_PIXELS:
                raise MediaError(f"image of {image.width}x{image.height} pixels is too large")
            return png_data_url(image, max_side)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError):
        raise MediaError(f"{uri[:80]!r} is not a readable image") from None
