"""vLLM engine arguments and placement of an LLM role, shared by in-job engines and Serve deployments."""

from __future__ import annotations

from typing import Any

from models.llm.config import LLMRoleConfig

# Without disable_any_whitespace, grammar-constrained sampling from a weak model can loop on whitespace.
_STRUCTURED_OUTPUTS = {"backend": "xgrammar", "disable_any_whitespace": True}


def engine_kwargs(role: LLMRoleConfig) -> dict[str, Any]:
    """vLLM engine arguments of a role (shared by the in-job engine and the Serve deployment)."""
    kwargs: dict[str, Any] = dict(
        dtype=role.dtype,
        max_model_len=role.max_model_len,
        enforce_eager=role.enforce_eager,
        tensor_parallel_size=role.tensor_parallel_size,
        structured_outputs_config=_STRUCTURED_OUTPUTS,
    )
    if role.accelerator_type is None:
        kwargs["distributed_executor_backend"] = "mp"
    if role.kv_cache_gb is not None:
        kwargs["kv_cache_memory_bytes"] = int(role.kv_cache_gb * 2**30)
    if role.max_images_per_prompt:
        kwargs["limit_mm_per_prompt"] = {"image": role.max_images_per_prompt}
    return kwargs


def placement(role: LLMRoleConfig) -> dict[str, Any]:
    """Where an engine runs: accelerator bundles on GPU clusters, CPU bundles otherwise."""
    if role.accelerator_type is not None:
        return {"accelerator_type": role.accelerator_type}
    bundles = [{"CPU": role.cpus_per_engine}] * role.tensor_parallel_size
    return {"placement_group_config": {"bundles": bundles}}
