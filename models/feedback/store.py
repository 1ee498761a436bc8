"""The feedback store: an append-only log of generated posts and of what people did with them.

Parquet files under a ``pyarrow.fs`` URI (a local folder here, object storage in production) that Ray Data
reads: ``posts/<post_id>.parquet`` (one generated post) and ``events/<event key>.parquet`` (one feedback
event). Every file is written whole under a temporary name and then moved into place, so a reader never
sees half a file, and names are unique per post and per event id, so Serve replicas never write the same
file unless a client repeats an event, which then lands in the same place once.

Compaction merges single-event files older than a window into ``events/segment-<id>.parquet`` files and
deletes them: a repeated event id is recognised when it arrives only within that window; a later repeat is
stored again and readers keep the first received (``models.feedback.evidence.unique_events``).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

POSTS, EVENTS = "posts", "events"
SEGMENT_PREFIX = "segment-"  # compacted events; a single event's file name is 32 hex digits
Stored = Literal["stored", "duplicate", "conflict"]

POST_SCHEMA = pa.schema(
    [
        ("post_id", pa.string()),
        ("user_id", pa.string()),  # empty when the request named no user
        ("profile_version", pa.string()),  # a digest of the profile text the post was written for
        ("profile", pa.string()),
        ("idea", pa.string()),
        ("title", pa.string()),
        ("body", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("image_prompts", pa.list_(pa.string())),
        ("video_prompts", pa.list_(pa.string())),
        ("scores", pa.string()),  # JSON: clip, relevance, combined
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("user_id", pa.string()),
        ("post_id", pa.string()),
        ("action", pa.string()),  # keep, edit or discard
        ("edited_text", pa.string()),  # the user's version of the post (edit only)
        ("timestamp", pa.timestamp("us", tz="UTC")),  # when the user acted (from the client)
        ("received_at", pa.timestamp("us", tz="UTC")),
        ("profile_version", pa.string()),  # copied from the post, so readers need no join
        ("post_title", pa.string()),
        ("post_body", pa.string()),
    ]
)
# The fields that make two events with one id the same event (a client retry) rather than a conflict.
_IDENTITY = ("event_id", "user_id", "post_id", "action", "edited_text", "timestamp")


def profile_version(profile: str) -> str:
    """A short digest that names one profile text."""
    return hashlib.sha256(profile.encode()).hexdigest()[:12]


def listing_digest(listing: list[tuple[str, int]]) -> str:
    """A digest of an event listing (names and sizes)."""
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


def new_post_id() -> str:
    """A fresh, unguessable post id (32 hex digits)."""
    return uuid.uuid4().hex


class FeedbackStore:
    """Posts and feedback events under ``uri`` (anything ``pyarrow.fs.FileSystem.from_uri`` opens)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.fs, root = pafs.FileSystem.from_uri(uri)
        self.root = root.rstrip("/")
        for folder in (POSTS, EVENTS):
            self.fs.create_dir(f"{self.root}/{folder}", recursive=True)

    def record_post(self, post: dict[str, Any]) -> None:
        """Persist one generated post (``POST_SCHEMA`` fields; ``created_at`` is set here)."""
        row = {**post, "created_at": datetime.now(UTC)}
        self._write(self._post_path(post["post_id"]), pa.Table.from_pylist([row], schema=POST_SCHEMA))

    def find_post(self, post_id: str) -> dict[str, Any] | None:
        """The recorded post ``post_id``, or None when no post has that id."""
        path = self._post_path(post_id)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        return pq.read_table(path, filesystem=self.fs).to_pylist()[0]

    def record_event(self, event: dict[str, Any], post: dict[str, Any]) -> Stored:
        """Persist one event about ``post`` unless its id is stored already: ``"stored"``, ``"duplicate"``
        (the same event again) or ``"conflict"`` (the id was used for a different event)."""
        path = self._event_path(event["event_id"])
        if self.fs.get_file_info(path).type == pafs.FileType.File:
            stored = pq.read_table(path, filesystem=self.fs).to_pylist()[0]
            same = all(stored[name] == event[name] for name in _IDENTITY)
            return "duplicate" if same else "conflict"
        row = {
            **event,
            "received_at": datetime.now(UTC),
            "profile_version": post["profile_version"],
            "post_title": post["title"],
            "post_body": post["body"],
        }
        self._write(path, pa.Table.from_pylist([row], schema=EVENT_SCHEMA))
        return "stored"

    def event_files(self) -> list[str]:
        """The paths of every stored event (never a file still being written)."""
        return [path for path, _ in self.event_listing()]

    def listing_digest(self) -> str:
        """A digest of the event files present (names and sizes): it changes when an event arrives."""
        return listing_digest(self.event_listing())

    def event_listing(self) -> list[tuple[str, int]]:
        """(path, size) of every stored event file and segment, sorted by path."""
        return listing_of(self.event_infos())

    def event_infos(self) -> list[pafs.FileInfo]:
        """Every stored event file and segment (never a file still being written), sorted by path."""
        selector = pafs.FileSelector(f"{self.root}/{EVENTS}", allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        return sorted(
            (
                info
                for info in infos
                if info.type == pafs.FileType.File and info.base_name.endswith(".parquet")
            ),
            key=lambda info: info.path,
        )

    def staging_folder(self) -> str:
        """A fresh folder beside ``events/`` for a compaction's segments (no reader looks there)."""
        return f"{self.root}/.compaction-{uuid.uuid4().hex[:12]}"

    def publish_segments(self, staging: str) -> int:
        """Move the Parquet files written under ``staging`` into ``events/`` as segments; how many moved."""
        written = [
            info.path
            for info in self.fs.get_file_info(pafs.FileSelector(staging, allow_not_found=True))
            if info.type == pafs.FileType.File and info.base_name.endswith(".parquet")
        ]
        for path in written:
            self.fs.move(path, f"{self.root}/{EVENTS}/{SEGMENT_PREFIX}{uuid.uuid4().hex}.parquet")
        self.fs.delete_dir(staging)
        return len(written)

    def delete_files(self, paths: list[str]) -> None:
        """Delete event files whose events a published segment holds."""
        for path in paths:
            self.fs.delete_file(path)

    def _post_path(self, post_id: str) -> str:
        return f"{self.root}/{POSTS}/{post_id}.parquet"

    def _event_path(self, event_id: str) -> str:
        # Hashed: a client's event id may hold any character, a file name may not.
        return f"{self.root}/{EVENTS}/{hashlib.sha256(event_id.encode()).hexdigest()[:32]}.parquet"

    def _write(self, path: str, table: pa.Table) -> None:
        """Write ``table`` whole under a temporary name beside ``path``, then move it into place."""
        folder, _, name = path.rpartition("/")
        tmp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        pq.write_table(table, tmp, filesystem=self.fs)
        self.fs.move(tmp, path)


def listing_of(infos: list[pafs.FileInfo]) -> list[tuple[str, int]]:
    """(path, size) of each listed event file, in the listing's order."""
    return [(info.path, info.size or 0) for info in infos]


def compactable(infos: list[pafs.FileInfo], older_than_s: float) -> list[str]:
    """The listed single-event files (not segments) written at least ``older_than_s`` seconds ago."""
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    return [
        info.path
        for info in infos
        if not info.base_name.startswith(SEGMENT_PREFIX) and (info.mtime or cutoff) <= cutoff
    ]
