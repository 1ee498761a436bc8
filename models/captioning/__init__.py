"""Item captioning: the requests per item and modality (``requests``), the stage's rows, the cache."""

from models.captioning.requests import CAPTION_COLUMNS, caption_requests, content_key, video_request

__all__ = ["CAPTION_COLUMNS", "caption_requests", "content_key", "video_request"]
