"""Reading item media for the VLM: images as small PNG data URLs, video frames from its two ends."""

from __future__ import annotations

import base64
import io
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
