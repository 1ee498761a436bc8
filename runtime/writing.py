"""What the writing stages (``generate``, ``judge``) share: the writer with its models and LLM clients.

``PostWriter`` (``models/generation/writer.py``) is built here for a Ray actor: its diffusion, CLIP, embedding
and safety models in process, its LLM calls to the roles' Serve deployments or HTTP endpoints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from models.config import TailorMindConfig
from models.generation.safety import JUDGE_ROLE, SafetyGate
from models.generation.writer import WRITER_ROLE, Complete, PostWriter, UserBrief
from runtime.chat import RoleClients, chat_client


def writer_roles(config: TailorMindConfig) -> tuple[str, ...]:
    """The LLM roles a post needs: the writer, and the judge when the safety gate checks the policy."""
    return (WRITER_ROLE, JUDGE_ROLE) if config.generation.safety.policy_check else (WRITER_ROLE,)


def role_clients(config: TailorMindConfig, names: tuple[str, ...], api_keys: dict[str, str]) -> RoleClients:
    """``complete(requests, role)`` over these roles' deployments or endpoints, counting the calls."""
    clients = {name: chat_client(getattr(config.llm, name), api_keys.get(name)) for name in names}
    return RoleClients(clients, config.seed)


def endpoint_keys(config: TailorMindConfig, names: tuple[str, ...]) -> dict[str, str]:
    """The driver's API keys of the HTTP roles among ``names`` (actors do not see its environment)."""
    roles = {name: getattr(config.llm, name) for name in names}
    return {name: os.environ.get(r.api_key_env, "") for name, r in roles.items() if r.backend == "http"}


def post_writer(config: TailorMindConfig, complete: Complete) -> PostWriter:
    """The writer with the configured diffusion, CLIP, embedding and safety models, its LLM calls to
    ``complete``."""
    from models.embedding import TextEmbedder
    from models.generation.diffusion import ImageGenerator, VideoGenerator
    from models.scoring.clip_score import CLIPScorer
    from models.scoring.safety_checker import ImageSafetyChecker

    gen = config.generation
    safety = gen.safety
    checker = (
        ImageSafetyChecker(safety.image_checker, device=gen.device, sensitivity=safety.image_sensitivity)
        if safety.image_checker is not None
        else None
    )
    return PostWriter(
        complete=complete,
        images=ImageGenerator.from_config(gen),
        scorer=CLIPScorer(gen.clip_model, device=gen.device),
        embedder=TextEmbedder(device=gen.device),
        num_images=gen.num_images,
        reflection_rounds=gen.reflection_rounds,
        seed=config.seed,
        videos=VideoGenerator.from_config(gen) if gen.num_videos else None,
        num_videos=gen.num_videos,
        video_score_frames=gen.video.score_frames,
        safety=SafetyGate.from_config(safety, complete, checker, gen.video.score_frames),
        safety_rewrites=safety.rewrites,
    )


def ensure_llm_roles(config: TailorMindConfig, names: tuple[str, ...]) -> None:
    """Start the Serve deployments of these roles (all but HTTP ones) before actors call them."""
    from runtime.llm import ensure_llm_deployments

    roles = [getattr(config.llm, name) for name in names]
    ensure_llm_deployments([role for role in roles if role.backend != "http"])


def actor_resources(config: TailorMindConfig) -> dict[str, Any]:
    """One CPU, and a GPU when the generation models run on CUDA."""
    return {"num_cpus": 1, "num_gpus": 1 if config.generation.device.startswith("cuda") else 0}


def user_brief(row: dict[str, Any], cards: dict[str, str]) -> UserBrief:
    """A refined user as the writer sees them: profile, history cards and history + CF cards."""
    history = [cards[i] for i in row["history"]]
    return UserBrief(
        row["user_id"], row["profile_refined"], history, history + [cards[i] for i in row["cf_items"]]
    )


def map_refined_users(
    refined: Path,
    max_users: int | None,
    actor: type,
    config: TailorMindConfig,
    roles: tuple[str, ...],
    **kwargs: Any,
) -> Any:
    """The refined users at ``refined`` (the first ``max_users``; None: all) through ``generation.workers``
    ``actor``s, ``generation.batch_size`` users a batch; each actor is built with ``config``, ``kwargs`` and
    ``api_keys``, the driver's keys of the HTTP roles among ``roles``."""
    import ray.data

    users = ray.data.read_parquet(str(refined.resolve()))
    if max_users is not None:
        users = users.limit(max_users)
    return users.map_batches(
        actor,
        fn_constructor_kwargs={"config": config, "api_keys": endpoint_keys(config, roles), **kwargs},
        batch_format="pyarrow",
        batch_size=config.generation.batch_size,
        compute=ray.data.ActorPoolStrategy(size=config.generation.workers),
        **actor_resources(config),
    )
