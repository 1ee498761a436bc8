import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from jobs.stage_runner import MARKER, StageRunner, fingerprint
from models.errors import TailorMindError
from tests.conftest import REPO_ROOT


def write_output(text):
    def build(out):
        (out / "result.txt").write_text(text)
        return {"rows": 1}

    return build


def test_runs_then_skips_until_config_or_input_changes(tmp_path):
    data = tmp_path / "input.txt"
    data.write_text("v1")
    runner = StageRunner(tmp_path / "run")
    first = runner.run("a", write_output("x"), config={"k": 1}, inputs=[data])
    assert not first.skipped
    assert (first.path / "result.txt").read_text() == "x"
    assert json.loads((first.path / MARKER).read_text())["summary"] == {"rows": 1}

    again = runner.run("a", write_output("y"), config={"k": 1}, inputs=[data])
    assert again.skipped and (again.path / "result.txt").read_text() == "x"
    assert again.fingerprint == first.fingerprint

    changed_config = runner.run("a", write_output("y"), config={"k": 2}, inputs=[data])
    assert not changed_config.skipped and (changed_config.path / "result.txt").read_text() == "y"

    data.write_text("v2 is longer")
    changed_input = runner.run("a", write_output("z"), config={"k": 2}, inputs=[data])
    assert not changed_input.skipped and changed_input.fingerprint != changed_config.fingerprint


def test_a_copied_input_keeps_its_fingerprint_so_a_moved_run_resumes(tmp_path):
    data = tmp_path / "input"
    data.mkdir()
    (data / "rows.csv").write_text("1,2\n")
    runner = StageRunner(tmp_path / "run")
    first = runner.run("a", write_output("x"), config={}, inputs=[data])
    os.utime(data / "rows.csv", ns=(0, 0))  # what a copy to another machine does to every mtime
    assert runner.run("a", write_output("y"), config={}, inputs=[data]).skipped
    (data / "rows.csv").write_text("1,3\n")  # same size, other content
    changed = runner.run("a", write_output("z"), config={}, inputs=[data])
    assert not changed.skipped and changed.fingerprint != first.fingerprint


def test_a_run_folder_moved_to_another_path_resumes(tmp_path):
    raw = tmp_path / "raw.csv"
    raw.write_text("1,2\n")
    runner = StageRunner(tmp_path / "run")
    up = runner.run("up", write_output("1"), config={"path": runner.key(runner.path("up"))}, inputs=[raw])
    down = runner.run("down", write_output("2"), config={}, inputs=[up.path])
    assert runner.key(up.path) == "up" and runner.key(raw) == str(raw)

    (tmp_path / "run").rename(tmp_path / "moved")  # the run folder synced to another machine or path
    moved = StageRunner(tmp_path / "moved")
    up_again = moved.run("up", write_output("x"), config={"path": moved.key(moved.path("up"))}, inputs=[raw])
    assert up_again.skipped
    again = moved.run("down", write_output("y"), config={}, inputs=[moved.path("up")])
    assert again.skipped and again.fingerprint == down.fingerprint


def test_force_and_downstream_fingerprint(tmp_path):
    runner = StageRunner(tmp_path / "run")
    up = runner.run("up", write_output("1"), config={})
    down = runner.run("down", write_output("2"), config={}, inputs=[up.path])
    assert fingerprint(up.path) == up.fingerprint

    forced = StageRunner(tmp_path / "run", force={"up"})
    up2 = forced.run("up", write_output("1"), config={})
    assert not up2.skipped
    assert forced.run("down", write_output("2"), config={}, inputs=[up2.path]).skipped == (
        up2.fingerprint == up.fingerprint
    )
    assert down.path.exists()


def test_failed_build_publishes_nothing(tmp_path):
    runner = StageRunner(tmp_path / "run")

    def broken(out):
        (out / "half.txt").write_text("partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        runner.run("a", broken, config={})
    assert not (tmp_path / "run" / "a").exists()
    assert list((tmp_path / "run").iterdir()) == []


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(TailorMindError, match="does not exist"):
        StageRunner(tmp_path / "run").run("a", write_output("x"), config={}, inputs=[tmp_path / "nope"])


KILLED_STAGE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from jobs.stage_runner import StageRunner

    def build(out):
        (out / "part-0.txt").write_text("first half")
        Path(sys.argv[2]).write_text("started")
        time.sleep(60)
        (out / "part-1.txt").write_text("second half")

    StageRunner(sys.argv[1]).run("slow", build, config={"v": 1})
    """
)


def test_stage_killed_midway_leaves_nothing_a_rerun_trusts(tmp_path):
    run_dir, started = tmp_path / "run", tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_STAGE, str(run_dir), str(started)], cwd=REPO_ROOT)
    deadline = time.time() + 60
    while not started.exists():
        assert time.time() < deadline and proc.poll() is None, "stage never started"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    assert not (run_dir / "slow").exists()
    runner = StageRunner(run_dir)
    assert not runner.is_current("slow", {"v": 1})
    result = runner.run("slow", write_output("complete"), config={"v": 1})
    assert not result.skipped
    assert sorted(p.name for p in run_dir.iterdir()) == ["slow"], "leftover temp dirs were not cleaned"


def test_a_resumable_stage_continues_from_its_checkpoints_and_only_for_the_same_config(tmp_path):
    runner = StageRunner(tmp_path / "run")
    seen: list[list[str]] = []

    def build(out, fail_after: int | None = None):
        seen.append(sorted(p.name for p in out.iterdir()))
        for part in range(3):
            if not (out / f"part-{part}").exists():
                (out / f"part-{part}").write_text("done")
            if part == fail_after:
                raise RuntimeError("killed")
        return {"parts": 3}

    with pytest.raises(RuntimeError):
        runner.run("slow", lambda out: build(out, fail_after=0), config={"v": 1}, resumable=True)
    assert not (tmp_path / "run" / "slow").exists()
    with pytest.raises(RuntimeError):  # another config starts over
        runner.run("slow", lambda out: build(out, fail_after=1), config={"v": 2}, resumable=True)
    result = runner.run("slow", build, config={"v": 2}, resumable=True)
    assert seen == [[], [], ["part-0", "part-1"]]  # the rerun found v2's checkpoints, not v1's
    assert not result.skipped and sorted(p.name for p in result.path.iterdir()) == [
        "_stage.json",
        "part-0",
        "part-1",
        "part-2",
    ]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["slow"]  # no partial folder is left


def test_ray_library_loggers_stay_at_warning_after_ray_serve_is_imported():
    """``import ray.serve`` sets its logger to INFO; the driver's levels must survive it (ray.serve.llm's
    deployment-options dump is a child of that logger)."""
    script = textwrap.dedent(
        """
        import logging
        from runtime.cluster import _driver_log_levels
        _driver_log_levels()
        import ray.serve
        from ray.llm._internal.serve.core.server import builder
        print(logging.getLogger("ray.serve").level, builder.logger.getEffectiveLevel())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split()[-2:] == [str(logging.WARNING)] * 2, out.stdout
