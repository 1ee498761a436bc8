"""Tokenizers for the tiny offline models, trained or written deterministically from built-in text."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import CLIPTokenizer, PreTrainedTokenizerFast

# Chat markup of the tiny chat LLM and the tiny VLM (Qwen-style), and the VLM's image placeholder.
CHAT_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
IMAGE_TOKEN = "<image>"
# Idefics3's processor expects these beside the image token; the tiny VLM splits images into <= 2x2 tiles.
VISION_SPECIAL_TOKENS = [IMAGE_TOKEN, "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"] + [
    f"<row_{row}_col_{col}>" for row in (1, 2) for col in (1, 2)
]


def chat_template(image_placeholder: str | None = None) -> str:
    """Jinja chat template for string or OpenAI-style part lists; image parts become the placeholder."""
    image = image_placeholder or ""
    return (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        f"{{% if part['type'] in ['image', 'image_url', 'image_pil'] %}}{image}"
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


_CORPUS_WORDS = (
    "the a an and or of to in on for with from by at as is are was be this that it its user users item items "
    "movie movies film story drama comedy action thriller horror romance animation documentary fantasy "
    "adventure crime mystery sci-fi science fiction war western musical children family history music "
    "profile preference preferences reason likes enjoys prefers dislikes watches recent history evidence "
    "caption image video frame scene person people city night day light dark color colour bright warm "
    "post title body tags idea style template reflection revise score rank ranking candidate candidates "
    "index indices top best worst first last because likely similar different new old classic modern "
    "json true false null yes no one two three four five six seven eight nine ten "
    "describe summary summarize write update gradient feedback improve explain answer question "
)
_CORPUS_SYMBOLS = '{}[]":,.!?;-_()0123456789 \n'


def _training_corpus() -> list[str]:
    words = _CORPUS_WORDS.split()
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    lines.append(_CORPUS_SYMBOLS)
    lines.append(json.dumps({"preferences": [{"preference": "dark drama", "reason": "watches crime"}]}))
    lines.append(json.dumps({"top": [3, 17, 42], "title": "A bright day", "tags": ["city", "night"]}))
    return lines * 4


def build_bpe_tokenizer(out: Path, vocab_size: int, vision: bool = False) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with the chat markup (and the image token) and save it to ``out``."""
    specials = CHAT_SPECIAL_TOKENS + (VISION_SPECIAL_TOKENS if vision else [])
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=specials[1:],
        model_max_length=4096,
    )
    fast.chat_template = chat_template(IMAGE_TOKEN if vision else None)
    fast.save_pretrained(out)
    return fast


def build_clip_tokenizer(out: Path) -> CLIPTokenizer:
    """Save a CLIP tokenizer whose vocabulary is every byte symbol, with and without the end-of-word mark."""
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab_list = ["<|startoftext|>", "<|endoftext|>", *symbols, *(f"{s}</w>" for s in symbols)]
    tokenizer = CLIPTokenizer(
        vocab={token: index for index, token in enumerate(vocab_list)}, merges=[], model_max_length=77
    )
    tokenizer.save_pretrained(out)
    return tokenizer
