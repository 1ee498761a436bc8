"""Feedback: the store (atomic, once per event id), events as evidence, evidence in the gradient prompt."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.feedback import feedback_stage
from jobs.pipeline import PipelineRun
from jobs.stage_runner import StageRunner
from models.config import load_config
from models.data import encode_interactions, load_dataset
from models.feedback.evidence import action_counts, edit_difference, unique_events, user_evidence
from models.feedback.rows import EVIDENCE_SCHEMA
from models.feedback.store import SEGMENT_PREFIX, FeedbackStore, new_post_id, profile_version
from models.profiling.cohort import UserSample, cohort_table, select_cohort
from models.profiling.refiner import ProfileRefiner
from runtime.artifacts import FEEDBACK_EVIDENCE
from runtime.broadcast import mapping_of
from runtime.refining import start_batch, with_feedback
from tests.datasets import clean_dataset
from tests.test_refine_leakage import recording_llm, recording_scorer

EVERY_USER = UserSample(None, 0, "profiling")

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _post(user_id: str, title: str, body: str, profile: str = "1. heists (likes them)") -> dict:
    return {
        "post_id": new_post_id(),
        "user_id": user_id,
        "profile_version": profile_version(profile),
        "profile": profile,
        "idea": "idea",
        "title": title,
        "body": body,
        "tags": ["film"],
        "image_prompts": ["a vault"],
        "video_prompts": [],
        "scores": json.dumps({"combined": 1.0}),
    }


def _event(event_id: str, post: dict, action: str, minutes: int, edited: str | None = None) -> dict:
    return {
        "event_id": event_id,
        "user_id": post["user_id"],
        "post_id": post["post_id"],
        "action": action,
        "edited_text": edited,
        "timestamp": T0 + timedelta(minutes=minutes),
    }


def test_store_keeps_each_event_once_and_refuses_a_reused_id(tmp_path):
    store = FeedbackStore(str(tmp_path / "fb"))
    post = _post("u1", "Heist night", "A slow-burn crime epic for winter.")
    store.record_post(post)
    assert store.find_post(post["post_id"])["title"] == "Heist night"
    assert store.find_post(new_post_id()) is None
    event = _event("e-1", post, "keep", 1)
    assert store.record_event(event, post) == "stored"
    digest = store.listing_digest()
    again = FeedbackStore(f"file://{tmp_path / 'fb'}")  # another replica, the same store by URI
    assert again.record_event(dict(event), post) == "duplicate"
    assert again.record_event({**event, "action": "discard"}, post) == "conflict"
    assert len(store.event_files()) == 1 and store.listing_digest() == digest
    (row,) = pq.read_table(store.event_files()[0]).to_pylist()
    assert (row["post_title"], row["profile_version"]) == ("Heist night", post["profile_version"])
    assert not list((tmp_path / "fb").rglob("*.tmp"))  # written under a temporary name, then moved


def test_events_become_evidence_lines_and_counts_per_profile_version():
    kept = _post("u1", "Heist night", "A slow-burn crime epic for winter.")
    dropped = _post("u1", "Rom-com binge", "Ten romantic comedies.", profile="1. romance (rewatches)")
    edited = _post("u1", "Vault tricks", "Five heist films with great vault scenes.")
    events = [
        {**_event("a", kept, "discard", 1), "post_title": kept["title"], "post_body": kept["body"]},
        {**_event("b", kept, "keep", 2), "post_title": kept["title"], "post_body": kept["body"]},
        {**_event("c", dropped, "discard", 3), "post_title": dropped["title"], "post_body": dropped["body"]},
        {
            **_event(
                "d", edited, "edit", 4, edited="Five heist films with tense vault scenes and no romance."
            ),
            "post_title": edited["title"],
            "post_body": edited["body"],
        },
    ]
    for event, post in zip(events, (kept, kept, dropped, edited), strict=True):
        event["profile_version"] = post["profile_version"]
    lines = user_evidence(events, max_events=8, edit_chars=200).splitlines()
    assert lines == [
        "- kept the post 'Heist night' (evidence for the profile)",  # the later action on a post wins
        "- discarded the post 'Rom-com binge' (evidence against the profile)",
        "- edited the post 'Vault tricks': removed: great … scenes.; added: tense … scenes and no romance.",
    ]
    assert user_evidence(events, max_events=1, edit_chars=200).startswith("- edited")  # the latest only
    assert edit_difference("a b c", "a b c", 50) == "removed: nothing; added: nothing"
    counts = action_counts(events)
    assert counts[kept["profile_version"]] == {"keep": 1, "edit": 1, "discard": 0}  # last action per post
    assert counts[dropped["profile_version"]] == {"keep": 0, "edit": 0, "discard": 1}


def test_a_users_feedback_reaches_their_gradient_prompt_and_no_one_elses(tmp_path):
    dataset = load_dataset(clean_dataset(tmp_path, users=3, items=400, per_user=8))
    encoded = encode_interactions(dataset)
    table = cohort_table(encoded, select_cohort(encoded, EVERY_USER, history_items=5), None, 0)
    users = table["user_id"].to_pylist()
    item_ids = encoded.item_ids.to_pylist()
    cards = pa.table({"item_id": item_ids, "card": [f"CARD-{item_id}" for item_id in item_ids]})
    config = load_config(None, ["profiling.rounds=1", "profiling.rank_top_k=3"])
    initial = json.dumps([{"preference": "films", "reason": "watched many"}])
    profiles = table.append_column("preferences", pa.array([initial] * table.num_rows))
    evidence = pa.Table.from_pylist(
        [{"user_id": users[0], "feedback": "- discarded the post 'Rom-com binge'", "events": 1}],
        schema=EVIDENCE_SCHEMA,
    )
    feedback = dict(zip(evidence["user_id"].to_pylist(), evidence["feedback"].to_pylist(), strict=True))
    joined = profiles.append_column("feedback", pa.array([feedback.get(u) for u in users], pa.string()))
    rows = start_batch(joined, cards, config).to_pylist()  # the rows with_feedback's join gives the stage
    sent: list[tuple[str, str, str]] = []
    refiner = ProfileRefiner(config.profiling, mapping_of(cards, "item_id", "card"), 0)
    seen = {r["user_id"]: r["seen_items"] for r in table.to_pylist()}
    refiner.refine(rows, recording_llm(sent), seen=seen, score=recording_scorer(sent))
    gradients = {
        user: [p for who, role, p in sent if who == user and "textual gradient" in p] for user in users
    }
    assert gradients[users[0]] and all("discarded the post 'Rom-com binge'" in p for p in gradients[users[0]])
    for user in users[1:]:
        assert gradients[user] and all("(no feedback yet)" in p for p in gradients[user])
    assert not any("Rom-com" in p for who, _, p in sent if who != users[0])


@pytest.mark.slow
def test_the_feedback_stage_groups_the_stores_events_per_user(ray_cluster, tmp_path):
    def run_stage():
        return feedback_stage(PipelineRun(StageRunner(tmp_path / "run"), config))

    store = FeedbackStore(str(tmp_path / "fb"))
    posts = [_post(user, f"post of {user}", "body text") for user in ("u1", "u1", "u2")]
    for n, post in enumerate(posts):
        store.record_post(post)
        store.record_event(_event(f"e{n}", post, "keep" if n else "discard", n), post)
    config = load_config(None, [f"feedback.uri={tmp_path / 'fb'}"])
    run = run_stage()
    rows = {r["user_id"]: r for r in pq.read_table(run.path / FEEDBACK_EVIDENCE).to_pylist()}
    assert set(rows) == {"u1", "u2"} and rows["u1"]["events"] == 2
    assert rows["u1"]["feedback"].splitlines() == [
        "- discarded the post 'post of u1' (evidence against the profile)",
        "- kept the post 'post of u1' (evidence for the profile)",
    ]
    profiles = ray_cluster.data.from_items([{"user_id": user} for user in ("u1", "u2", "u3")])
    joined = with_feedback(profiles, run.path / FEEDBACK_EVIDENCE).take_all()
    assert {r["user_id"]: r["feedback"] for r in joined} == {
        **{u: rows[u]["feedback"] for u in rows},
        "u3": None,
    }
    assert {r["feedback"] for r in with_feedback(profiles, tmp_path / "no-evidence").take_all()} == {None}
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["events"] == 3 and metrics["top_profile_versions"] == {
        posts[0]["profile_version"]: {"keep": 2, "edit": 0, "discard": 1}
    }
    assert metrics["posts"] == {"keep": 2, "edit": 0, "discard": 1} and metrics["profile_versions"] == 1
    assert run_stage().skipped  # no new event: up to date
    store.record_event(_event("e9", posts[2], "discard", 9), posts[2])
    assert not run_stage().skipped


def test_a_repeated_event_id_is_read_once_the_first_received_winning():
    post = _post("u1", "Heist night", "A slow-burn crime epic for winter.")
    first = {**_event("e-1", post, "keep", 1), "received_at": T0 + timedelta(minutes=1)}
    repeat = {**first, "action": "discard", "received_at": T0 + timedelta(days=2)}  # after compaction
    other = {**_event("e-2", post, "edit", 3), "received_at": T0 + timedelta(minutes=3)}
    assert unique_events([repeat, other, first]) == [first, other]


@pytest.mark.slow
def test_the_feedback_stage_compacts_old_event_files_and_reads_the_same_evidence(ray_cluster, tmp_path):
    def run_stage(*overrides: str):
        config = load_config(
            None, [f"feedback.uri={tmp_path / 'fb'}", "feedback.compact_min_files=2", *overrides]
        )
        run = feedback_stage(PipelineRun(StageRunner(tmp_path / "run", force=True), config))
        rows = sorted(pq.read_table(run.path / FEEDBACK_EVIDENCE).to_pylist(), key=lambda row: row["user_id"])
        return rows, json.loads((run.path / "metrics.json").read_text())

    def event_names() -> list[str]:
        return sorted(path.name for path in (tmp_path / "fb" / "events").iterdir())

    store = FeedbackStore(str(tmp_path / "fb"))
    posts = [_post(user, f"post of {user}", "body text") for user in ("u1", "u1", "u2")]
    for n, post in enumerate(posts):
        store.record_post(post)
        store.record_event(_event(f"e{n}", post, "keep" if n else "discard", n), post)
    singles = event_names()
    evidence, metrics = run_stage()  # the files are younger than compact_after_s: left alone
    assert event_names() == singles and metrics["events"] == metrics["files"] == 3
    compacted, compacted_metrics = run_stage("feedback.compact_after_s=0")
    segments = event_names()
    assert segments and all(name.startswith(SEGMENT_PREFIX) for name in segments)
    assert not [path for path in (tmp_path / "fb").iterdir() if path.name.startswith(".")]  # staging gone
    assert compacted == evidence and compacted_metrics["posts"] == metrics["posts"]
    assert compacted_metrics["top_profile_versions"] == metrics["top_profile_versions"]
    assert compacted_metrics["events"] == 3 and compacted_metrics["files"] == len(segments)
    # Past the window a client's retry is stored again; readers keep the first received.
    assert store.record_event(_event("e1", posts[1], "keep", 1), posts[1]) == "stored"
    assert store.record_event(_event("e2", posts[2], "discard", 2), posts[2]) == "stored"
    repeated, repeated_metrics = run_stage("feedback.compact_after_s=3600")
    assert len(event_names()) == len(segments) + 2
    assert repeated == evidence and repeated_metrics["events"] == 3


def test_evidence_totals_list_only_the_profile_versions_with_most_posts_and_sum_them_all(tmp_path):
    from models.feedback.rows import evidence_totals

    def user(name: str, *actions: tuple[str, str, int]) -> dict:
        counts = [{"profile_version": v, "action": a, "posts": n} for v, a, n in actions]
        return {"user_id": name, "feedback": "", "events": sum(n for *_, n in actions), "actions": counts}

    users = [user("u1", ("v1", "keep", 3), ("v1", "discard", 1)), user("u2", ("v2", "edit", 1))]
    users += [user("u3", ("v3", "keep", 2)), user("u4")]
    pq.write_table(pa.Table.from_pylist(users, schema=EVIDENCE_SCHEMA), tmp_path / "part.parquet")
    totals = evidence_totals(str(tmp_path), top=2)
    assert totals["events"] == 7 and totals["profile_versions"] == 3
    assert totals["posts"] == {"keep": 5, "edit": 1, "discard": 1}
    assert list(totals["top_profile_versions"].items()) == [
        ("v1", {"keep": 3, "edit": 0, "discard": 1}),
        ("v3", {"keep": 2, "edit": 0, "discard": 0}),
    ]
