"""Join the configured Ray cluster, or start a local one, with engine and worker chatter kept off the console.

Engines (vLLM), Serve replicas and Ray workers log to files in the Ray session's log folder; a run links
that folder as ``RUN/logs/ray``. What reaches the console are warnings and errors, Ray Data's progress bars
and the pipeline's own one-line-per-stage messages.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import ray

from models.config import RayConfig

log = logging.getLogger("tailormind.ray")

# Inherited by the processes of a local cluster (raylet, workers, Serve replicas, vLLM engines).
QUIET_ENVIRONMENT = {
    # vLLM's INFO lines (config dumps, per-request logs) and its CPU-build warnings (no Triton, eager mode,
    # no tcmalloc), repeated by every engine process, stay out; its errors still reach the console
    "VLLM_LOGGING_LEVEL": "ERROR",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",  # a Train worker's print stays a print: forwarded once, not twice
    "RAY_SERVE_LOG_TO_STDERR": "0",  # Serve replicas log to their files only; errors still propagate
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "DIFFUSERS_VERBOSITY": "error",
}
# Only for the workers: their model-loading progress bars (the driver keeps Ray Data's).
WORKER_ONLY_ENVIRONMENT = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def connect(config: RayConfig, run_dir: Path | None = None) -> None:
    """Join ``config.address`` or ``RAY_ADDRESS`` when given, else start a private local cluster.

    With ``run_dir``, the session's log folder (engine, worker and Serve logs) is linked as RUN/logs/ray.
    """
    if not ray.is_initialized():
        for name, value in QUIET_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        address = config.address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
            log.info("joined Ray cluster at %s", address)
        else:
            gb = config.object_store_memory_gb
            added = {k: v for k, v in WORKER_ONLY_ENVIRONMENT.items() if k not in os.environ}
            os.environ.update(added)  # the local cluster's processes inherit them, then the driver drops them
            try:
                ray.init(
                    address="local",
                    logging_level=logging.WARNING,  # the line below says that a cluster started
                    num_cpus=config.num_cpus or os.cpu_count(),
                    num_gpus=config.num_gpus,
                    object_store_memory=int(gb * 2**30) if gb else None,
                    # The state API that Ray Train's placement-group cleaner polls lives in the dashboard:
                    # without it the cleaner warns on every poll ("Failed to query Ray Train Controller").
                    include_dashboard=True,
                    dashboard_host="127.0.0.1",
                    # Ray keeps up to num_cpus idle workers; with more logical CPUs than cores (the demos),
                    # that is many idle processes of ~0.8 GB that imported torch. Two per core: one per
                    # core made every Ray Data stage start cold workers (the test suite ran ~15% slower).
                    _system_config={"num_workers_soft_limit": 2 * (os.cpu_count() or 1)},
                )
            finally:
                for name in added:
                    del os.environ[name]
            log.info("started a local Ray cluster: %s", ray.cluster_resources())
    _data_defaults()
    _driver_log_levels()
    if run_dir is not None:
        link_session_logs(Path(run_dir))


def _driver_log_levels() -> None:
    """Ray's libraries log each dataset's plan and each deployment's start at INFO in the driver, and
    matplotlib its font cache on a fresh machine (the report's plots); a run prints its own line per stage,
    so they log warnings and errors only (Ray's files keep everything).

    ``import ray.serve`` sets its logger to INFO, so it is imported first (ray.serve.llm's loggers are its
    children: the deployment-options dump goes with it).
    """
    import ray.serve  # noqa: F401

    for name in ("ray.data", "ray.serve", "ray.train", "ray.tune", "matplotlib"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # It warns that progress bars are off, which in a job log (not a terminal) is this module's choice.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def _data_defaults() -> None:
    """Ray Data settings of every job here.

    Ray 2.60's file-listing read path (datasource v2: a ListFiles task before the reads) spent about 10 s
    per ``read_parquet`` on this machine whatever the file size; the v1 reader takes 0.1 s.
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    context.use_datasource_v2 = False
    # Progress bars in a terminal; in a job log (not a terminal) the stage runner's heartbeat instead of
    # Ray Data's blocks of progress lines every 10 s.
    context.enable_progress_bars = sys.stdout.isatty()
    # One bar per dataset: each operator's bar leaves a blank line in a terminal when it closes (two
    # 6-operator pipelines: 16 blank lines, 4 with one bar each, measured); 158 of a demo's 269 lines.
    context.enable_operator_progress_bars = False


def session_log_dir() -> Path | None:
    """The log folder of the Ray session this process is connected to (None when it is not on this node)."""
    node = getattr(ray._private.worker, "_global_node", None)
    directory = Path(node.get_logs_dir_path()) if node is not None else None
    return directory if directory is not None and directory.is_dir() else None


def link_session_logs(run_dir: Path) -> None:
    """Point RUN/logs/ray at the session's log folder (engine, worker and Serve logs)."""
    source = session_log_dir()
    if source is None:  # a remote head: its logs stay on the cluster (the dashboard shows them)
        return
    target = run_dir / "logs" / "ray"
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() and Path(os.readlink(target)) == source:
        return
    if target.is_symlink() or target.exists():
        target.unlink()
    target.symlink_to(source, target_is_directory=True)
    log.info("engine, worker and Serve logs: %s", target)


def serve_replica_pid(app: str, deployment: str) -> int:
    """The process of the one local replica of ``deployment`` in Serve app ``app`` (by its process title)."""
    import re

    import psutil

    title = re.compile(rf"ray::ServeReplica:{re.escape(app)}:{re.escape(deployment)}(\.|\s|$)")
    names = {p.pid: " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])}
    pids = [pid for pid, name in names.items() if title.match(name)]
    if len(pids) != 1:
        raise RuntimeError(f"expected one local replica of {app}:{deployment}, found {len(pids)}")
    return pids[0]
