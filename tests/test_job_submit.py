"""The pipeline submitted with the real ``ray job submit`` CLI to a Ray head this test starts and stops."""

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO_ROOT, free_port

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
SUBMISSION_ID = "tailormind-job-submit-test"
# Ray's token authentication (on by default) with a token of this test's own: the head, the job's driver
# and the CLI read it from the environment, so no user's ~/.ray/auth_token is used or created.
AUTH_TOKEN = secrets.token_hex(32)


def cluster_env() -> dict[str, str]:
    """This process's environment minus RAY_ADDRESS and RAY_AUTH_*, with the test's token, venv first on PATH.

    Entrypoints run through a shell on the cluster, so ``python`` there is the first one on the head's
    PATH, as on a node image where the project's environment is the active one.
    """
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.startswith("RAY_AUTH_")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=AUTH_TOKEN)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def get_json(url: str) -> dict:
    """GET a dashboard API path with the test's token."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {AUTH_TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def wait_for_dashboard(head: subprocess.Popen, url: str, seconds: float = 120.0) -> None:
    """Return once the dashboard's job API answers; fail when the head dies or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert head.poll() is None, f"ray start exited with {head.returncode}"
        try:
            get_json(f"{url}/api/version")
            return
        except OSError:
            time.sleep(1)
    pytest.fail(f"the Ray dashboard at {url} did not answer within {seconds:.0f} s")


def stop_head(head: subprocess.Popen) -> None:
    """SIGTERM the blocking ``ray start`` (it shuts down its own processes); SIGKILL its group if stuck."""
    head.terminate()
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=30)


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[str]:
    """A private 4-CPU Ray head with the dashboard on free ports; yields the job API address."""
    dashboard_port = free_port()
    ports = {
        "--port": free_port(),
        "--dashboard-port": dashboard_port,
        "--ray-client-server-port": free_port(),
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
        "--metrics-export-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
    }
    command = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=4"]
    command += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", "--disable-usage-stats"]
    command += [f"--object-store-memory={500 * 2**20}", *(f"{flag}={port}" for flag, port in ports.items())]
    log = (tmp_path / "ray-start.log").open("w")
    # Stopping drains the node first (30 s by default); the job has finished by then, so nothing needs it.
    env = {**cluster_env(), "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        address = f"http://127.0.0.1:{dashboard_port}"
        wait_for_dashboard(head, address)
        yield address
    finally:
        stop_head(head)
        log.close()


def documented_submit_command() -> str:
    """The ``ray job submit`` command of the docs' section on submitting, as a user copies it."""
    page = (REPO_ROOT / "docs" / "cluster.md").read_text()
    section = page[page.index("## Submitting the pipeline to a cluster") :]
    block = section[section.index("```bash\n") + len("```bash\n") :]
    return block[: block.index("```")].strip()


@pytest.mark.slow
def test_the_documented_submit_command_runs_as_written(ray_head, movielens_src, tmp_path):
    run_dir = tmp_path / "run"
    command = documented_submit_command()
    assert command.startswith("ray job submit --address http://HEAD:8265 --working-dir .")
    # Only what differs per machine: the head's address, the output folder, and (when this checkout is not
    # beside shared/) where the shared data is; and --until topk to keep CI short.
    command = command.replace("http://HEAD:8265", ray_head).replace("/shared/runs/demo", str(run_dir))
    if not (REPO_ROOT.parent / "shared" / "data" / "ml-latest-small").is_dir():
        command = command.replace("$PWD/../shared/data/ml-latest-small", str(movielens_src))
    command = command.replace("ray job submit", f"ray job submit --submission-id {SUBMISSION_ID}", 1)
    command += " --until topk --set cf.epochs=2 --set ray.num_cpus=4"
    submit = subprocess.run(
        ["bash", "-c", command],
        cwd=REPO_ROOT,
        env=cluster_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = submit.stdout + submit.stderr
    assert submit.returncode == 0, output[-4000:]
    assert "joined Ray cluster" in output  # the job's driver used the cluster, not a local one of its own
    assert get_json(f"{ray_head}/api/jobs/{SUBMISSION_ID}")["status"] == "SUCCEEDED"

    metrics = json.loads((run_dir / "cf" / "metrics.json").read_text())
    assert 0.0 <= metrics["recall@20"] <= 1.0 and metrics["epochs"] <= 2
    topk = pq.read_table(run_dir / "topk")
    assert {"user_id", "item_ids", "scores"} <= set(topk.column_names)
    assert topk.num_rows == metrics["num_users"]
