"""Checkpoints of long benchmarks: a cut-short run keeps what it finished, and only for the same config
on the same kind of machine."""

import json

from benchmarks.common import Checkpoints, machine_kind


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


def test_a_part_measured_on_another_kind_of_machine_is_measured_again(tmp_path):
    checkpoints = Checkpoints("bench", root=tmp_path, work_root=tmp_path / "raw")
    kept = checkpoints.write("part", {"k": 1}, {"value": 1})
    assert kept["machine"] == machine_kind() and checkpoints.read("part", {"k": 1}) == kept
    path = checkpoints.folder / "part.json"
    path.write_text(json.dumps(kept | {"machine": kept["machine"] | {"cpu": "another processor"}}))
    assert checkpoints.read("part", {"k": 1}) is None


def test_core_shares_name_the_process_that_used_the_cores():
    import subprocess
    import sys
    import time

    from benchmarks.common import CoreShares

    cores = CoreShares()
    busy = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"]
    )
    deadline = time.perf_counter() + 1.0
    while time.perf_counter() < deadline:  # this process spins too
        pass
    shares = cores.stop()  # the child is still spinning: a live process is counted
    busy.wait()
    assert shares["this process (the driver)"] > 0.15 and shares["other processes"] > 0.15, shares
    assert abs(sum(shares.values()) - 1.0) < 1e-6 or shares["idle"] == 0.0, shares
