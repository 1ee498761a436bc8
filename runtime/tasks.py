"""Calls fanned out as Ray tasks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import ray

from models.errors import TailorMindError


def ray_map(function: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[Any]:
    """Each call as a Ray task of one CPU; an array given to every call is put in the object store once."""
    task = ray.remote(function).options(num_cpus=1)
    shared = {id(arg): ray.put(arg) for args in calls for arg in args if isinstance(arg, np.ndarray)}
    return get([task.remote(*(shared.get(id(arg), arg) for arg in args)) for args in calls])


def get(refs: Any) -> Any:
    """``ray.get``, with a task's TailorMindError (a strict-mode stop, an unusable file) raised as itself."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as error:
        if isinstance(error.cause, TailorMindError):
            raise error.cause from None
        raise
