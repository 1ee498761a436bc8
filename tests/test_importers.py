import hashlib

import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from models.data import load_dataset
from models.data.movielens import import_movielens
from models.data.synth import SynthSpec, write_synthetic


@pytest.fixture(scope="module")
def movielens(movielens_src):
    return import_movielens(movielens_src)


def test_movielens_counts(movielens):
    assert movielens.items.num_rows == 9742
    assert movielens.interactions.num_rows == 100836
    assert len(set(movielens.interactions["user_id"].to_pylist())) == 610


def test_movielens_items_text_and_normalised_tags(movielens):
    rows = {row["item_id"]: row for row in movielens.items.to_pylist()}
    toy_story = rows["1"]
    assert toy_story["title"] == "Toy Story (1995)"
    assert "Genres: Adventure, Animation, Children, Comedy, Fantasy" in toy_story["text"]
    assert toy_story["tags"][:5] == ["adventure", "animation", "children", "comedy", "fantasy"]
    assert "pixar" in toy_story["tags"]  # a user tag, lower-cased
    every_tag = [tag for row in rows.values() for tag in row["tags"]]
    assert all(tag == tag.strip().lower() and tag for tag in every_tag)


def test_import_cli_writes_a_dataset_that_validates(movielens_src, tmp_path, capsys):
    out = tmp_path / "ml"
    assert main(["import", "movielens", "--src", str(movielens_src), "--out", str(out)]) == 0
    dataset = load_dataset(out)
    assert dataset.report.to_dict()["interactions"]["quarantined"] == 0
    assert set(dataset.interactions["split"].to_pylist()) == {"train", "valid", "test"}


def _digest(root):
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_synth_same_seed_same_bytes(tmp_path):
    spec = SynthSpec(users=300, items=400, tags=30, seed=3, image_share=0.05)
    write_synthetic(spec, tmp_path / "a")
    write_synthetic(spec, tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    write_synthetic(SynthSpec(users=300, items=400, tags=30, seed=4), tmp_path / "c")
    assert _digest(tmp_path / "c")["interactions.parquet"] != _digest(tmp_path / "a")["interactions.parquet"]


def test_synth_dataset_validates_with_images_and_power_law(tmp_path):
    counts = write_synthetic(SynthSpec(users=2000, items=1000, tags=40, seed=0, image_share=0.1), tmp_path)
    dataset = load_dataset(tmp_path)
    assert dataset.report.to_dict()["interactions"]["quarantined"] == 0
    assert dataset.interactions.num_rows == counts["interactions"]
    items = dataset.items.to_pylist()
    with_images = [row for row in items if row["image_uris"]]
    assert 50 <= len(with_images) <= 150
    assert all((tmp_path / row["image_uris"][0]).read_bytes()[:4] == b"\x89PNG" for row in with_images)
    popularity = pq.read_table(tmp_path / "interactions.parquet")["item_id"].value_counts().to_pylist()
    counts_sorted = sorted((entry["counts"] for entry in popularity), reverse=True)
    top_share = sum(counts_sorted[: len(counts_sorted) // 10]) / sum(counts_sorted)
    assert top_share > 0.3  # the top 10% of items take far more than 10% of interactions


def test_synth_rejects_impossible_sizes(tmp_path, capsys):
    assert main(["synth", "--users", "0", "--items", "10", "--tags", "2", "--out", str(tmp_path)]) == 2
    assert "users" in capsys.readouterr().err


def _lightgcn_folder(root):
    """A LightGCN-format folder: 3 users, a malformed train line, a blank line and a user without tests."""
    root.mkdir()
    (root / "train.txt").write_text("0 10 11 12 13\n1 11 14\n2 x 15\n\n3 10 12 15 16\n")
    (root / "test.txt").write_text("0 14 15\n1 10\n3\n")
    return root


def test_lightgcn_import_round_trips_and_quarantines_bad_lines(tmp_path, capsys):
    src, out = _lightgcn_folder(tmp_path / "src"), tmp_path / "ds"
    assert main(["import", "lightgcn", "--src", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no timestamps" in printed and "train.txt: 3 accepted, 2 quarantined" in printed
    quarantined = pq.read_table(out / "quarantine" / "lines.parquet").to_pylist()
    assert [(q["file"], q["line"]) for q in quarantined] == [("train.txt", 3), ("train.txt", 4)]
    dataset = load_dataset(out)
    assert not dataset.has_timestamps
    pairs = {
        (u, i, s)
        for u, i, s in zip(
            *(dataset.interactions[c].to_pylist() for c in ("user_id", "item_id", "split")), strict=True
        )
    }
    expected_train = {("0", i) for i in ("10", "11", "12", "13")} | {("1", "11"), ("1", "14")}
    expected_train |= {("3", i) for i in ("10", "12", "15", "16")}
    assert {(u, i) for u, i, s in pairs if s == "train"} == expected_train
    assert {(u, i) for u, i, s in pairs if s == "test"} == {("0", "14"), ("0", "15"), ("1", "10")}
    assert sorted(dataset.items["item_id"].to_pylist()) == [str(i) for i in (10, 11, 12, 13, 14, 15, 16)]
    assert dataset.report.to_dict()["interactions"]["quarantined"] == 0


def test_without_timestamps_the_held_out_items_are_a_seeded_draw(tmp_path):
    from models.cf.inputs import cf_inputs

    src, out = _lightgcn_folder(tmp_path / "src"), tmp_path / "ds"
    main(["import", "lightgcn", "--src", str(src), "--out", str(out)])
    dataset = load_dataset(out)
    first, again = (cf_inputs(dataset, seed=0, num_negatives=1) for _ in range(2))
    assert first.validation == "held_out_random_train"
    assert (first.valid != again.valid).nnz == 0 and first.validation_users == 3
    assert first.test.nnz == 3  # every test item stays a positive: user 0 has two
    drawn = {tuple(cf_inputs(dataset, seed=s, num_negatives=1).valid[0].indices) for s in range(20)}
    assert len(drawn) > 1  # not always the last of user 0's train line


def test_lightgcn_import_needs_both_files(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.txt").write_text("0 1\n")
    assert main(["import", "lightgcn", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "ds")]) == 2
    assert "test.txt" in capsys.readouterr().err
