"""Tiny random models with real architectures, built offline from configs, for tests and the demo.

They load through exactly the code that loads real weights (vLLM, diffusers, transformers); their outputs
are meaningless, which is fine: they prove the path, not the quality.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from models.tiny.text_tokenizers import IMAGE_TOKEN, build_bpe_tokenizer, build_clip_tokenizer

TEXT_VOCAB_SIZE = 512
# head_dim 64: vLLM's CPU attention rejects head_dim 16 (PLATFORM.md).
_TEXT_DECODER = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=4096,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)


def _clip_text_config(tokenizer: Any) -> dict[str, Any]:
    """The tiny CLIP text tower shared by the Stable Diffusion text encoder and the CLIP scorer model."""
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_chat_llm(out: Path) -> None:
    """Tiny Llama chat model: 2 layers, hidden 128, head_dim 64, BPE tokenizer with a chat template."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = build_bpe_tokenizer(out, TEXT_VOCAB_SIZE)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **_TEXT_DECODER,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    ).save_pretrained(out)


def build_vlm(out: Path) -> None:
    """Tiny Idefics3 (SmolVLM's architecture): a 2-layer SigLIP tower on 64x64 tiles, 4 tokens per tile.

    Idefics3 because vLLM 0.29's Qwen2-VL and LLaVA modules import torchvision-only image processors and the
    CPU environment has no torchvision (PLATFORM.md); Idefics3's processor has a PIL backend. Images are
    resized to a 128-pixel longest edge and split into up to 2x2 tiles plus a global view: transformers
    counts 0 tiles for an unsplit image, which vLLM then feeds as an empty batch.
    """
    from transformers import (
        GenerationConfig,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
    )
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    tokenizer = build_bpe_tokenizer(out, TEXT_VOCAB_SIZE, vision=True)
    image_size, patch_size, scale_factor = 64, 16, 2
    config = Idefics3Config(
        vision_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
        ),
        text_config=dict(
            _TEXT_DECODER,
            model_type="llama",
            vocab_size=len(tokenizer),
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        scale_factor=scale_factor,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    Idefics3ForConditionalGeneration(config).to(torch.bfloat16).save_pretrained(out)
    GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    ).save_pretrained(out)
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=True,
        size={"longest_edge": 2 * image_size},
        max_image_size={"longest_edge": image_size},
    )
    Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=(image_size // patch_size) ** 2 // scale_factor**2,
        chat_template=tokenizer.chat_template,
    ).save_pretrained(out)


def build_stable_diffusion(out: Path) -> None:
    """Tiny Stable Diffusion pipeline (UNet, VAE, CLIP text encoder, DDIM) that draws 64x64 images."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )
    tokenizer = build_clip_tokenizer(out / "tokenizer")
    text_encoder = CLIPTextModel(CLIPTextConfig(**_clip_text_config(tokenizer)))
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(out)


def build_text_to_video(out: Path) -> None:
    """Tiny Wan 2.1 text-to-video pipeline (3D transformer, causal video VAE, UMT5 encoder, flow matching).

    Wan's architecture, so ``Wan-AI/Wan2.1-T2V-*-Diffusers`` weights run the same code; sizes a multiple
    of 16 and 4k+1 frames, as for the real model.
    """
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = build_bpe_tokenizer(out / "tokenizer", TEXT_VOCAB_SIZE)
    torch.manual_seed(0)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    pipeline = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        transformer=transformer,
    )
    pipeline.save_pretrained(out)


def build_clip(out: Path) -> None:
    """Tiny CLIP (text and vision towers, 32-dim projection) with its processor, for CLIPScore."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    tokenizer = build_clip_tokenizer(out)
    config = CLIPConfig(
        text_config=_clip_text_config(tokenizer), vision_config=_CLIP_VISION, projection_dim=32
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(out)
    CLIPProcessor(image_processor=_clip_image_processor(), tokenizer=tokenizer).save_pretrained(out)


def build_safety_checker(out: Path) -> None:
    """Tiny Stable Diffusion safety checker (CLIP vision tower, 17 + 3 random concepts) with its processor.

    Thresholds of 1 flag nothing at the default sensitivity (a cosine never exceeds 1), so a post passes
    unless a test raises ``image_sensitivity``, as the real checker passes ordinary images.
    """
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    torch.manual_seed(0)
    checker = StableDiffusionSafetyChecker(CLIPConfig(vision_config=_CLIP_VISION, projection_dim=32))
    with torch.no_grad():
        checker.concept_embeds.normal_()
        checker.special_care_embeds.normal_()
    checker.save_pretrained(out)
    _clip_image_processor().save_pretrained(out)


_CLIP_VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
)


def _clip_image_processor() -> Any:
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


# name -> builder; ``tiny://<name>`` in a config resolves to the built directory.
TINY_MODELS = {
    "chat": build_chat_llm,
    "vlm": build_vlm,
    "sd": build_stable_diffusion,
    "clip": build_clip,
    "video": build_text_to_video,
    "safety": build_safety_checker,
}
