"""Join the configured Ray cluster, or start a local one sized to this machine."""

from __future__ import annotations

import logging
import os

import ray

from models.config import RayConfig

log = logging.getLogger("tailormind.ray")


def connect(config: RayConfig) -> None:
    """Join ``config.address`` or ``RAY_ADDRESS`` when given, else start a private local cluster."""
    if ray.is_initialized():
        return
    address = config.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        log.info("joined Ray cluster at %s", address)
        return
    gb = config.object_store_memory_gb
    ray.init(
        address="local",
        num_cpus=config.num_cpus or os.cpu_count(),
        num_gpus=config.num_gpus,
        object_store_memory=int(gb * 2**30) if gb else None,
        include_dashboard=False,
    )
    log.info("started a local Ray cluster: %s", ray.cluster_resources())
