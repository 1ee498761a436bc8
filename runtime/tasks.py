"""Calls fanned out as Ray tasks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import ray


def ray_map(function: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[Any]:
    """Each call as a Ray task of one CPU; an array given to every call is put in the object store once."""
    task = ray.remote(function).options(num_cpus=1)
    shared = {id(arg): ray.put(arg) for args in calls for arg in args if isinstance(arg, np.ndarray)}
    return ray.get([task.remote(*(shared.get(id(arg), arg) for arg in args)) for args in calls])
