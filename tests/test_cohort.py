"""The cohort's item scope: what the captions stage captions for each ``profiling.caption_scope``."""

import pyarrow.parquet as pq
import pytest

from jobs.cohort import build_cohort
from models.config import load_config
from models.data.synth import SynthSpec, write_synthetic


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_synthetic(SynthSpec(users=60, items=400, tags=20, seed=0, interactions=2400), root)
    return root


def _items(dataset, out, scope):
    config = load_config(None, [f"profiling.caption_scope={scope}", "profiling.max_users=3"])
    out.mkdir()
    build_cohort(str(dataset), None, config, str(out))
    users = pq.read_table(out / "users.parquet")
    return set(pq.read_table(out / "items.parquet")["item_id"].to_pylist()), users


@pytest.mark.parametrize("scope", ["evidence", "history"])
def test_history_scope_leaves_the_candidates_to_their_own_text(dataset, tmp_path, scope):
    items, users = _items(dataset, tmp_path / scope, scope)
    evidence = {i for row in users["history"].to_pylist() for i in row}
    candidates = {i for row in users["valid_candidates"].to_pylist() for i in row}
    assert evidence <= items
    if scope == "evidence":
        assert candidates <= items
    else:
        assert not (candidates - evidence) & items
