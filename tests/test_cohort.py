"""The cohort's item scope: what the captions stage captions for each ``profiling.caption_scope``."""

import pyarrow.parquet as pq
import pytest

from models.config import load_config
from models.data.synth import SynthSpec, write_synthetic
from models.profiling.cohort_parts import CohortFiles, build_cohort

FILES = CohortFiles("users.parquet", "cold_start.parquet", "items.parquet")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_synthetic(SynthSpec(users=60, items=400, tags=20, seed=0, interactions=2400), root)
    return root


def _items(dataset, out, scope):
    config = load_config(None, [f"profiling.caption_scope={scope}", "profiling.max_users=3"])
    out.mkdir()
    build_cohort(str(dataset), None, config, str(out), FILES)
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


def test_a_cohort_built_part_by_part_is_the_whole_data_s_sample(dataset, tmp_path, ray_cluster, monkeypatch):
    """The data stage's parts (several, each holding its users) give the users, histories and held-out
    positives that the single file gives; exactly ``max_users`` of them, in Ray tasks."""
    from runtime import dataset_validation
    from runtime.tasks import ray_map

    monkeypatch.setattr(dataset_validation, "BUCKET_ROWS", 600)
    parted = tmp_path / "parted"
    dataset_validation.validate_dataset(str(dataset), parted, strict=False)
    assert len(list((parted / "interactions.parquet").iterdir())) >= 3
    config = load_config(None, ["profiling.max_users=7", "coldstart.max_users=2", "coldstart.min_history=40"])
    tables = {}
    for name, run in (("whole", None), ("parted", ray_map)):
        out = tmp_path / f"cohort-{name}"
        out.mkdir()
        source = dataset if name == "whole" else parted
        counts = build_cohort(str(source), None, config, str(out), FILES, **({"run": run} if run else {}))
        assert counts["users"] == 7 and counts["cold_start_users"] == 2
        users = pq.read_table(out / "users.parquet").sort_by("user_id")
        tables[name] = (users, pq.read_table(out / "cold_start.parquet").sort_by("user_id"))
    (whole, whole_cold), (parted_users, parted_cold) = tables["whole"], tables["parted"]
    for column in ("user_id", "history", "seen_items"):
        assert parted_users[column].to_pylist() == whole[column].to_pylist()
    positives = [row[0] for row in whole["test_candidates"].to_pylist()]
    assert [row[0] for row in parted_users["test_candidates"].to_pylist()] == positives
    assert parted_cold.to_pylist() == whole_cold.to_pylist()
