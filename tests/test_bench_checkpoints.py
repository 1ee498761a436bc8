"""Checkpoints of long benchmarks: a cut-short run keeps what it finished, and only for the same config."""

from benchmarks.common import Checkpoints


def test_a_finished_part_is_read_back_only_with_the_config_it_was_measured_with(tmp_path):
    checkpoints = Checkpoints("bench", root=tmp_path, work_root=tmp_path / "raw")
    config = {"loss": "bpr", "batch_size": 16384, "marks": (300, 900)}
    assert checkpoints.read("synthetic bpr 16k", config) is None
    kept = checkpoints.write("synthetic bpr 16k", config, {"curve": [{"seconds": 1.5, "recall@20": 0.2}]})
    assert kept["curve"] == [{"seconds": 1.5, "recall@20": 0.2}] and kept["measured_at"]
    later_run = Checkpoints("bench", root=tmp_path, work_root=tmp_path / "raw")
    assert later_run.read("synthetic bpr 16k", config) == kept
    assert checkpoints.read("synthetic bpr 16k", config | {"batch_size": 4096}) is None
    assert checkpoints.read("synthetic bpr 4k", config) is None
    assert [path.name for path in checkpoints.folder.iterdir()] == ["synthetic_bpr_16k.json"]  # no partial


def test_clear_removes_parts_and_work_folders(tmp_path):
    checkpoints = Checkpoints("bench", root=tmp_path / "partial", work_root=tmp_path / "raw")
    checkpoints.write("part", {}, {"value": 1})
    (checkpoints.work_folder("run") / "stage.txt").write_text("done")
    assert (tmp_path / "raw" / "bench" / "run" / "stage.txt").is_file()
    assert [path.name for path in (tmp_path / "partial" / "bench").iterdir()] == ["part.json"]  # parts only
    checkpoints.clear()
    assert not (tmp_path / "partial" / "bench").exists() and not (tmp_path / "raw" / "bench").exists()
    assert checkpoints.read("part", {}) is None
