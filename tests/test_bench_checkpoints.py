"""Checkpoints of long benchmarks: a cut-short run keeps what it finished, and only for the same config."""

from benchmarks.common import Checkpoints


def test_a_finished_part_is_read_back_only_with_the_config_it_was_measured_with(tmp_path):
    checkpoints = Checkpoints("bench", root=tmp_path)
    config = {"loss": "bpr", "batch_size": 16384, "marks": (300, 900)}
    assert checkpoints.read("synthetic bpr 16k", config) is None
    kept = checkpoints.write("synthetic bpr 16k", config, {"curve": [{"seconds": 1.5, "recall@20": 0.2}]})
    assert kept["curve"] == [{"seconds": 1.5, "recall@20": 0.2}] and kept["measured_at"]
    assert Checkpoints("bench", root=tmp_path).read("synthetic bpr 16k", config) == kept  # a later run
    assert checkpoints.read("synthetic bpr 16k", config | {"batch_size": 4096}) is None
    assert checkpoints.read("synthetic bpr 4k", config) is None
    assert [path.name for path in checkpoints.folder.iterdir()] == ["synthetic_bpr_16k.json"]  # no partial


def test_clear_removes_parts_and_work_folders(tmp_path):
    checkpoints = Checkpoints("bench", root=tmp_path)
    checkpoints.write("part", {}, {"value": 1})
    (checkpoints.work_folder("run") / "stage.txt").write_text("done")
    assert (tmp_path / "bench" / "run" / "stage.txt").is_file()
    checkpoints.clear()
    assert not (tmp_path / "bench").exists() and checkpoints.read("part", {}) is None
