"""What every benchmark shares: the machine description, result files and plots."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PARTIAL_DIR = RESULTS_DIR / "partial"  # tracked: finished parts of long runs, committed as they finish
RAW_DIR = RESULTS_DIR / "raw"  # ignored by git: work folders of long runs (pipeline runs)


# Few, short candidates and small answers: the tiny chat model answers dozens of prompts a second on 2 cores.
TINY_CHAT_SETTINGS = [
    "profiling.history_items=5",
    "profiling.caption_scope=none",
    "profiling.num_negatives=9",
    "profiling.candidate_chars=24",
    "profiling.evidence_chars=400",
    "profiling.rank_top_k=3",
    "profiling.rounds=1",
]


def serve_roles(roles: tuple[str, ...]) -> list[str]:
    """Settings that put each chat role on one shared Serve deployment, batched, without retries."""
    keys = ("backend=serve", "max_model_len=2048", "max_retries=0", "batch_size=64")
    return [f"llm.{role}.{key}" for role in roles for key in keys]


def machine() -> dict[str, Any]:
    """The hardware and software a result was measured on."""
    import torch

    from models.llm.engine import cpu_bf16_units

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_bf16": cpu_bf16_units(),  # one model name covers Xeons with and without AMX
    }
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def best_of(fn: Callable[[], Any], repeats: int = 3) -> float:
    """Median wall seconds of ``fn`` over ``repeats`` runs (after the first call has warmed up)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass
class BenchResult:
    """One benchmark's measurements: rows of figures, each ratio against a same-run baseline."""

    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, **row: Any) -> None:
        """Record one measured configuration."""
        self.rows.append(row)

    def write(self, out_dir: Path = RESULTS_DIR) -> Path:
        """Write ``<name>.json`` with the machine description next to the plots."""
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{self.name}.json"
        payload = {
            "name": self.name,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(),
            "rows": self.rows,
            "notes": self.notes,
        }
        path.write_text(json.dumps(payload, indent=2, default=float))
        return path


def machine_kind() -> dict[str, Any]:
    """What makes two machines' measurements comparable: processor, cores, accelerator, Python, torch."""
    return {key: value for key, value in machine().items() if key != "memory_gib"}


class Checkpoints:
    """Finished parts of one long benchmark under ``benchmarks/results/partial/<name>/``, so that a run cut
    short (the machine taken back, the session over) resumes with the parts it has not finished; a part
    counts only if it was measured with the same configuration on the same kind of machine (a run resumed on
    another processor measures everything again: its ratios compare parts measured side by side). The parts
    are small JSON files tracked by git (commit them to resume on a new machine of the same kind); work
    folders go under the ignored ``raw/<name>/``, or under the tracked ``work_root`` a benchmark names (a
    pipeline run whose outputs do not depend on the machine; its logs are ignored)."""

    def __init__(self, name: str, root: Path = PARTIAL_DIR, work_root: Path = RAW_DIR):
        self.folder = root / name
        self.work_root = work_root / name

    def read(self, key: str, config: Any) -> dict[str, Any] | None:
        """The figures kept under ``key`` (and ``config``, ``machine``, ``measured_at``) if measured with
        ``config`` on this kind of machine."""
        path = self._path(key)
        if not path.exists():
            return None
        kept: dict[str, Any] = json.loads(path.read_text())
        same_config = kept["config"] == json.loads(json.dumps(config))
        return kept if same_config and kept.get("machine") == machine_kind() else None

    def write(self, key: str, config: Any, figures: dict[str, Any]) -> dict[str, Any]:
        """Keep the figures of one finished part; returns what ``read`` will return for it."""
        measured_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        kept = {"config": config, "machine": machine_kind(), "measured_at": measured_at, **figures}
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(kept, default=float))
        partial.replace(path)
        return json.loads(path.read_text())

    def work_folder(self, key: str) -> Path:
        """A folder kept across cut-short runs, for a part that resumes by itself (a pipeline run)."""
        folder = self.work_root / key
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def clear(self) -> None:
        """Remove every checkpoint and work folder once the results are written."""
        for folder in (self.folder, self.work_root):
            shutil.rmtree(folder, ignore_errors=True)

    def _path(self, key: str) -> Path:
        return self.folder / f"{key.replace(' ', '_')}.json"


PROCESS_ROLES = (  # (role, what its process title or command line holds), the first match wins
    ("vLLM engine core", ("VLLM::", "EngineCore")),
    ("Serve replica", ("ServeReplica",)),
    ("Serve proxy and controller", ("ProxyActor", "ServeController")),
    ("Ray workers (Data tasks, other actors)", ("ray::",)),
    ("Ray system (raylet, GCS, dashboard)", ("raylet", "gcs_server", "dashboard", "log_monitor")),
)


def cpu_seconds_by_role() -> dict[str, float]:
    """CPU seconds (user + system) each role's live processes on this machine have used so far."""
    import psutil

    totals: dict[str, float] = {}
    me = os.getpid()
    for process in psutil.process_iter(["pid", "name", "cmdline", "cpu_times"]):
        info = process.info
        if info["cpu_times"] is None:  # gone, or not ours to read
            continue
        title = " ".join([info["name"] or "", *(info["cmdline"] or [])[:3]])
        role = next((r for r, marks in PROCESS_ROLES if any(m in title for m in marks)), "other processes")
        role = "this process (the driver)" if info["pid"] == me else role
        totals[role] = totals.get(role, 0.0) + info["cpu_times"].user + info["cpu_times"].system
    return totals


class CoreShares:
    """Which processes had the machine's cores over a timed window: the share of ``cores x seconds`` each
    role used (processes that end inside the window are not counted), and the idle rest."""

    def __init__(self) -> None:
        self.before = cpu_seconds_by_role()
        self.start = time.perf_counter()

    def stop(self) -> dict[str, float]:
        """Each role's share of the cores since the window opened, largest first, with ``idle``."""
        seconds = time.perf_counter() - self.start
        capacity = seconds * (os.cpu_count() or 1)
        used = {
            role: max(0.0, total - self.before.get(role, 0.0)) / capacity
            for role, total in cpu_seconds_by_role().items()
        }
        shares = {role: share for role, share in sorted(used.items(), key=lambda kv: -kv[1]) if share > 0.001}
        return shares | {"idle": max(0.0, 1.0 - sum(used.values()))}


def bar_plot(path: Path, title: str, labels: list[str], values: list[float], ylabel: str) -> Path:
    """Save a labelled bar chart (PNG) of one figure per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(labels) + 2), 3.6))
    bars = ax.bar(labels, values, color="#3b7dd8")
    ax.bar_label(bars, fmt="%.3g", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    return save_figure(fig, path)


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, save as PNG and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class MemorySampler:
    """Peak resident memory of a process tree's Ray workers and engines, sampled in a thread."""

    def __init__(self, root_pid: int, interval: float = 0.5):
        self.root_pid, self.interval = root_pid, interval
        self.max_worker_mb = 0.0
        self.max_worker_name = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(self.interval):
            try:
                children = psutil.Process(self.root_pid).children(recursive=True)
            except psutil.NoSuchProcess:
                return
            for child in children:
                try:
                    name = " ".join(child.cmdline()).strip()[:80]
                    rss = child.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                if ("ray::" in name or "EngineCore" in name or "VLLM" in name) and rss > self.max_worker_mb:
                    self.max_worker_mb, self.max_worker_name = rss, name
