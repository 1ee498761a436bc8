"""Atomic, resumable stage outputs: ``RUN/<stage>/`` appears whole, with a marker, or not at all."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.config import config_digest
from models.errors import TailorMindError

MARKER = "_stage.json"
log = logging.getLogger("tailormind.stages")


@dataclass(frozen=True)
class StageResult:
    """Where a stage's output lives, its fingerprint for downstream stages, and whether it ran."""

    name: str
    path: Path
    fingerprint: str
    skipped: bool
    seconds: float


def fingerprint(path: Path) -> str:
    """Fingerprint of an input: a stage output's marker digest, else the names and contents of its files.

    Contents, not mtimes: a run folder copied to another machine (a job resubmitted on a new node, its inputs
    synced again) must resume, and a copy changes every mtime. Hashing reads each raw input once per run
    (blake2b: 0.8 GB/s here, on a 1 GB file); stage outputs are never read, their markers carry their
    fingerprints.
    """
    path = Path(path)
    marker = path / MARKER
    if marker.is_file():
        return str(json.loads(marker.read_text())["fingerprint"])
    if not path.exists():
        raise TailorMindError(f"input {path} does not exist; run the stage that produces it first.")
    digest = hashlib.blake2b(digest_size=16)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        rel = file.relative_to(path).as_posix() if path.is_dir() else file.name
        digest.update(f"{rel}\0{file.stat().st_size}\n".encode())
        with file.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "blake2b").digest())
    return digest.hexdigest()[:16]


class StageRunner:
    """Runs named stages into ``run_dir``: skips up-to-date ones, rebuilds changed ones atomically."""

    def __init__(self, run_dir: str | Path, force: Iterable[str] | bool = False):
        self.run_dir = Path(run_dir).resolve()  # absolute: Ray workers run in other directories
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._force = force

    def path(self, name: str) -> Path:
        """Final output directory of stage ``name``."""
        return self.run_dir / name

    def is_current(self, name: str, config: Any, inputs: Sequence[Path] = ()) -> bool:
        """True when ``RUN/<name>`` holds a finished output for exactly this config and these inputs."""
        marker = self.path(name) / MARKER
        if not marker.is_file():
            return False
        recorded = json.loads(marker.read_text())
        return bool(
            recorded["config"] == config_digest(config) and recorded["inputs"] == self._inputs(inputs)
        )

    def run(
        self,
        name: str,
        build: Callable[[Path], dict[str, Any] | None],
        *,
        config: Any,
        inputs: Sequence[Path] = (),
        resumable: bool = False,
    ) -> StageResult:
        """Run ``build(tmp_dir)`` unless current, then publish ``tmp_dir`` as ``RUN/<name>`` in one rename.

        A ``resumable`` stage builds in ``RUN/.<name>.partial-<fingerprint>``, which a failed or killed run
        leaves behind: a rerun with the same config and inputs hands it to ``build`` again, so the stage
        continues from its last checkpoint (what ``build`` wrote atomically there).
        """
        final = self.path(name)
        forced = self._force is True or (not isinstance(self._force, bool) and name in self._force)
        if not forced and self.is_current(name, config, inputs):
            say(f"{name:<10} up to date, skipped")
            return StageResult(name, final, fingerprint(final), skipped=True, seconds=0.0)
        inputs_fp = self._inputs(inputs)
        config_fp = config_digest(config)
        stage_fp = hashlib.sha256(f"{name}\0{config_fp}\0{json.dumps(inputs_fp)}".encode()).hexdigest()[:16]
        if resumable:
            tmp = self.run_dir / f".{name}.partial-{stage_fp}"
            self._remove_leftovers(name, keep=tmp)
            if tmp.is_dir():
                log.info("stage %s resumes from its checkpoints in %s", name, tmp)
            tmp.mkdir(exist_ok=True)
        else:
            self._remove_leftovers(name)
            tmp = self.run_dir / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
        start = time.perf_counter()
        try:
            with heartbeat(name, start):
                summary = build(tmp) or {}
        except BaseException:
            if not resumable:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        seconds = time.perf_counter() - start
        marker = {
            "stage": name,
            "config": config_fp,
            "inputs": inputs_fp,
            "fingerprint": stage_fp,
            "seconds": round(seconds, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "summary": summary,
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2))
        _fsync_dir(tmp)
        self._publish(tmp, final)
        say(f"{name:<10} {seconds:7.1f} s  {headline(summary)}".rstrip())
        return StageResult(name, final, stage_fp, skipped=False, seconds=seconds)

    def key(self, path: str | Path) -> str:
        """How markers name ``path``: relative to the run folder when inside it, so a moved run resumes."""
        inside = Path(path).resolve()
        return (
            inside.relative_to(self.run_dir).as_posix() if inside.is_relative_to(self.run_dir) else str(path)
        )

    def _inputs(self, inputs: Sequence[Path]) -> dict[str, str]:
        return {self.key(p): fingerprint(Path(p)) for p in inputs}

    def finished(self, name: str) -> StageResult:
        """The published output of stage ``name`` (for running a later stage on its own)."""
        final = self.path(name)
        if not (final / MARKER).is_file():
            raise TailorMindError(
                f"{final} holds no finished '{name}' stage; run it first (tailormind run --until {name}, or "
                f"python -m jobs.{name} with the same --config and --out)."
            )
        return StageResult(name, final, fingerprint(final), skipped=True, seconds=0.0)

    def _remove_leftovers(self, name: str, keep: Path | None = None) -> None:
        for stale in self.run_dir.glob(f".{name}.*-*"):
            if stale != keep:
                shutil.rmtree(stale, ignore_errors=True)

    def _publish(self, tmp: Path, final: Path) -> None:
        if final.exists():
            old = self.run_dir / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_dir(self.run_dir)


def say(line: str) -> None:
    """One line of a run's console output: a stage's result or heartbeat (stdout, flushed at once)."""
    print(line, flush=True)


HEARTBEAT_S = 30.0  # a stage still running says so this often in a job log (not a terminal)
HEADLINE = (  # summary entries a stage's console line shows, when it has them
    "users",
    "items",
    "interactions",
    "failed",
    "recall@20",
    "ndcg@20",
    "kept_step",
    "stopped_by",
    "rounds_run",
    "mean_selected_valid_rank",
    "content_free_gradients",
    "degenerate_gradients",
    "fusion_weight",
    "refused_by_safety",
    "posts",
)


def headline(summary: dict[str, Any]) -> str:
    """A stage's key counts on one line (and the number of users with degenerate LLM text, if counted)."""
    parts = []
    for key in HEADLINE:
        value = summary.get(key)
        if isinstance(value, bool | int | str) or (isinstance(value, float) and value == value):
            parts.append(f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}")
    degenerate = summary.get("degenerate")
    if isinstance(degenerate, dict) and "any" in degenerate:
        parts.append(f"degenerate {degenerate['any']}")
    return ", ".join(parts[:6])


@contextmanager
def heartbeat(name: str, start: float) -> Iterator[None]:
    """While a stage runs and the console is not a terminal, one line every ``HEARTBEAT_S`` seconds."""
    if sys.stdout.isatty():
        yield
        return
    done = threading.Event()

    def beat() -> None:
        while not done.wait(HEARTBEAT_S):
            say(f"{name:<10} running, {time.perf_counter() - start:.0f} s")

    thread = threading.Thread(target=beat, name=f"heartbeat-{name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
