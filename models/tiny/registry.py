"""Where the tiny models live, how they are (re)built, and how ``tiny://NAME`` sources resolve."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from models.errors import TailorMindError

# Bump when a builder changes, so stale builds are rebuilt instead of trusted.
BUILD_VERSION = 1
TINY_SCHEME = "tiny://"
_MARKER = "tiny_model.json"
# The names of ``models.tiny.builders.TINY_MODELS``, which is imported only to build (it loads torch).
TINY_NAMES = ("chat", "vlm", "sd", "clip", "video", "safety")


def default_models_dir() -> Path:
    """``$TAILORMIND_MODELS_DIR``, else ``~/.cache/tailormind/tiny-models``."""
    configured = os.environ.get("TAILORMIND_MODELS_DIR")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tailormind" / "tiny-models"


def _is_current(path: Path) -> bool:
    marker = path / _MARKER
    return marker.is_file() and json.loads(marker.read_text()).get("version") == BUILD_VERSION


def build_tiny_models(
    out: Path | None = None, names: Iterable[str] | None = None, force: bool = False
) -> dict[str, tuple[Path, bool]]:
    """Build the named tiny models under ``out`` (all by default); returns name -> (path, was_built)."""
    from models.tiny.builders import TINY_MODELS

    root = out or default_models_dir()
    root.mkdir(parents=True, exist_ok=True)
    results: dict[str, tuple[Path, bool]] = {}
    for name in names or TINY_NAMES:
        if name not in TINY_NAMES:
            raise TailorMindError(f"unknown tiny model '{name}'; known: {', '.join(TINY_NAMES)}.")
        target = root / name
        if _is_current(target) and not force:
            results[name] = (target, False)
            continue
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
        try:
            TINY_MODELS[name](staging)
            (staging / _MARKER).write_text(json.dumps({"name": name, "version": BUILD_VERSION}))
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        results[name] = (target, True)
    return results


def resolve_model_source(source: str, models_dir: Path | None = None) -> str:
    """A ``tiny://NAME`` or ``smollm2://NAME`` source becomes its built directory (SmolLM2 is converted on
    first use); any other source (hub id, path) is unchanged."""
    from models import pretrained

    if source.startswith(pretrained.SCHEME):
        return str(
            pretrained.build_smollm2(source[len(pretrained.SCHEME) :], models_dir or default_models_dir())[0]
        )
    if not source.startswith(TINY_SCHEME):
        return source
    name = source[len(TINY_SCHEME) :]
    path = (models_dir or default_models_dir()) / name
    if name not in TINY_NAMES:
        raise TailorMindError(f"model source '{source}' names no tiny model; known: {', '.join(TINY_NAMES)}.")
    if not _is_current(path):
        raise TailorMindError(
            f"tiny model '{name}' is not built under {path.parent}; run 'tailormind models build-tiny' "
            "(or 'make tiny-models') first, or set TAILORMIND_MODELS_DIR to where they were built."
        )
    return str(path)
