"""Shared fixtures: the real MovieLens sample and the repository root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """``$TAILORMIND_SHARED_DATA`` or the ``shared/data`` folder beside the checkout."""
    env = os.environ.get("TAILORMIND_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def movielens_src() -> Path:
    """MovieLens latest-small as GroupLens ships it (read in place, never copied into the project)."""
    path = shared_data_root() / "ml-latest-small"
    assert (path / "ratings.csv").is_file(), (
        f"MovieLens latest-small not found at {path}; set TAILORMIND_SHARED_DATA to the folder holding it"
    )
    return path
