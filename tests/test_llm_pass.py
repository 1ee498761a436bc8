import base64
import io

import numpy as np
import pytest
from PIL import Image

from jobs.llm_pass import run_structured
from models.llm.config import LLMRoleConfig
from models.llm.structured import answer_with_retries, parse_structured

CAPTION = {
    "type": "object",
    "properties": {"caption": {"type": "string", "maxLength": 60}},
    "required": ["caption"],
    "additionalProperties": False,
}
CHOICE = {
    "type": "object",
    "properties": {
        "top": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 9},
            "minItems": 3,
            "maxItems": 3,
        }
    },
    "required": ["top"],
    "additionalProperties": False,
}


def test_parse_structured_checks_json_and_schema():
    assert parse_structured('{"caption": "a cat"}', CAPTION) == ({"caption": "a cat"}, None)
    assert "invalid JSON" in parse_structured('{"caption": ', CAPTION)[1]
    assert "schema mismatch" in parse_structured('{"top": [1]}', CHOICE)[1]
    assert parse_structured(None, CAPTION)[1] == "empty answer"


def test_retries_bad_rows_only_and_reports_what_still_fails():
    keys = ("good", "late", "bad", "lost")
    requests = [{"row_key": key, "messages": [], "schema": CAPTION} for key in keys]
    seen: list[list[str]] = []

    def attempt(pending, number):
        seen.append([r["row_key"] for r in pending])
        outputs = {"good": ('{"caption": "ok"}', None), "bad": (None, "engine died")}
        outputs["late"] = ('{"caption": "second"}', None) if number == 2 else ('{"caption": ', None)
        return outputs  # "lost" never comes back

    answers = answer_with_retries(requests, attempt, max_retries=2)
    assert seen == [["good", "late", "bad", "lost"], ["late", "bad", "lost"], ["bad", "lost"]]
    assert answers["good"].value == {"caption": "ok"} and answers["good"].attempts == 1
    assert answers["late"].value == {"caption": "second"} and answers["late"].attempts == 2
    assert (answers["bad"].value, answers["bad"].error, answers["bad"].attempts) == (None, "engine died", 3)
    assert answers["lost"].error == "no output row"


def _png_data_url(seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.slow
def test_tiny_vlm_captions_images_through_ray_data_vllm(ray_cluster, tiny_models):
    role = LLMRoleConfig(
        model_source="tiny://vlm", max_images_per_prompt=1, max_tokens=48, max_model_len=1024
    )
    requests = [
        {
            "row_key": f"item{i}",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": _png_data_url(i)}},
                        {"type": "text", "text": "Describe the image."},
                    ],
                }
            ],
            "schema": CAPTION,
        }
        for i in range(6)
    ]
    answers = run_structured(requests, role)
    assert set(answers) == {f"item{i}" for i in range(6)}
    assert all(a.error is None and isinstance(a.value["caption"], str) for a in answers.values())


@pytest.mark.slow
def test_tiny_chat_on_serve_answers_two_passes_from_one_deployment(ray_cluster, tiny_models):
    from ray import serve

    # the engine settings of configs/demo.yaml's chat roles, so later tests reuse this deployment
    role = LLMRoleConfig(backend="serve", max_tokens=32, max_model_len=4096)
    requests = [
        {
            "row_key": f"u{i}",
            "messages": [{"role": "user", "content": f"rank items for user {i}"}],
            "schema": CHOICE,
        }
        for i in range(8)
    ]
    first = run_structured(requests, role)
    apps = set(serve.status().applications)
    second = run_structured(requests[:3], role, seed=1)
    assert set(serve.status().applications) == apps  # the same deployment served both passes
    assert all(len(a.value["top"]) == 3 for a in first.values())
    assert set(second) == {"u0", "u1", "u2"} and all(a.error is None for a in second.values())
