"""How each LLM role (captioner, profiler, ranker, optimizer, judge) is reached and sampled."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from models.config_base import StrictModel


class LLMRoleConfig(StrictModel):
    """One LLM role: its weights, its backend, the engine's resources and its sampling settings."""

    model_source: str = Field("tiny://chat", description="tiny://NAME, a Hugging Face id or a path")
    backend: Literal["vllm", "serve", "http"] = Field(
        "vllm",
        description="vllm: an engine inside the job (ray.data.llm); serve: a Ray Serve LLM deployment "
        "(started by the job when absent, kept across passes); http: any OpenAI-compatible endpoint",
    )
    scorer: Literal["engine", "transformers"] = Field(
        "engine",
        description="how a scoring step (the likelihood ranker) gets log-probabilities: engine, the "
        "backend's prompt log-probabilities; transformers, a Ray Data actor per engine that encodes each "
        "prefix once and scores its continuations as batches on the cached keys and values: about half "
        "the computed tokens of the engine way, yet no faster in eager PyTorch on 2 CPU cores "
        "(benchmarks/ranker_cost)",
    )
    # vLLM engine (backends vllm and serve)
    dtype: str = Field(
        "auto",
        description="auto: bfloat16 on GPUs and on CPUs with AMX, float32 on other CPUs (where vLLM's bf16 "
        "takes a slow path); or any vLLM dtype",
    )
    max_model_len: int = Field(2048, ge=128)
    enforce_eager: bool = Field(True, description="skip CUDA graphs (required on CPU)")
    tensor_parallel_size: int = Field(1, ge=1)
    accelerator_type: str | None = Field(None, description="GPU type, e.g. H100; None runs on CPU bundles")
    cpus_per_engine: float = Field(
        1.0, gt=0, description="Ray CPUs of each engine worker; on CPU, also its compute threads"
    )
    num_engines: int = Field(1, ge=1, description="engine replicas (Ray Data concurrency / Serve replicas)")
    batch_size: int = Field(
        16, ge=1, description="rows per engine batch (vllm) or per request batch (serve, http)"
    )
    batches_in_flight: int = Field(
        4, ge=1, description="serve/http: request batches sent at once per engine, so the engine can batch"
    )
    max_images_per_prompt: int = Field(0, ge=0, description="> 0 enables image input (VLMs)")
    kv_cache_gb: float | None = Field(
        1.0,
        gt=0,
        description="KV cache per engine; needed on CPU, where vLLM otherwise claims 92% of RAM; "
        "null on GPU lets gpu_memory_utilization decide",
    )
    kv_block_size: int | None = Field(
        None,
        ge=16,
        multiple_of=16,
        description="tokens per KV-cache block (vLLM's default when null: 128 on CPU); the prefix cache "
        "reuses whole blocks, so a shared prefix shorter than a block (a likelihood ranker's profile) is "
        "recomputed for every candidate",
    )
    # backend http
    base_url: str | None = Field(None, description="OpenAI-compatible base URL, e.g. http://host:8000/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    requests_per_second: float | None = Field(None, gt=0)
    # sampling and robustness
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    repetition_penalty: float = Field(
        1.0, gt=0, description="> 1 discourages repeats (small models loop without it); 1 = off"
    )
    max_retries: int = Field(1, ge=0, description="extra attempts for rows with errors or invalid JSON")

    @property
    def served_model_id(self) -> str:
        """The model's id on OpenAI routes (``tiny://vlm`` -> ``tiny-vlm``: ':' marks LoRA adapters there)."""
        return self.model_source.replace("://", "-")


class CaptionerConfig(LLMRoleConfig):
    """The captioner: a VLM that takes images."""

    model_source: str = "tiny://vlm"
    max_images_per_prompt: int = Field(2, ge=0, description="> 0 enables image input (VLMs)")


class RankerConfig(LLMRoleConfig):
    """Roles whose answers should be reproducible (ranker, judge): greedy by default."""

    temperature: float = Field(0.0, ge=0)


class VisualJudgeConfig(CaptionerConfig):
    """The judge of posts with images or clips: a VLM, greedy."""

    temperature: float = Field(0.0, ge=0)


class LLMConfig(StrictModel):
    """The LLM behind each role of the pipeline; a partial override keeps the role's own defaults.

    Roles that must see images (``captioner``, ``visual_judge``) take a VLM; every other role reads text.
    """

    captioner: CaptionerConfig = Field(
        CaptionerConfig(), description="describes item images and video frames (a VLM)"
    )
    summarizer: LLMRoleConfig = Field(
        LLMRoleConfig(), description="summarises item texts, and a video from its two segment descriptions"
    )
    profiler: LLMRoleConfig = Field(LLMRoleConfig(), description="writes initial profiles (eq. 9)")
    ranker: RankerConfig = Field(RankerConfig(), description="ranks candidates with a profile")
    optimizer: LLMRoleConfig = Field(LLMRoleConfig(), description="textual gradients and profile updates")
    writer: LLMRoleConfig = Field(LLMRoleConfig(), description="post styles, ideas, drafts and revisions")
    judge: RankerConfig = Field(RankerConfig(), description="judges post texts and checks their facts")
    visual_judge: VisualJudgeConfig = Field(
        VisualJudgeConfig(), description="judges posts with images or clips (a VLM)"
    )
