import base64
import io
import json
import os
import time

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from jobs.llm_step import LLMStep
from models.llm import engine
from models.llm.config import LLMRoleConfig
from models.llm.engine import engine_kwargs, placement
from models.llm.rows import request_json, row_answers, with_answers
from models.llm.structured import LLMAnswer, Outcome, answer_with_retries, parse_structured
from runtime.llm import wait_until_running
from tests.conftest import Reply, json_endpoint

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
        outputs = {"good": Outcome('{"caption": "ok"}', None, 5, 3, 2), "bad": Outcome(None, "engine died")}
        outputs["late"] = Outcome(
            '{"caption": "second"}' if number == 2 else '{"caption": ', None, 4, 2, number
        )
        return outputs  # "lost" never comes back

    answers = answer_with_retries(requests, attempt, max_retries=2)
    assert seen == [["good", "late", "bad", "lost"], ["late", "bad", "lost"], ["bad", "lost"]]
    assert answers["good"].value == {"caption": "ok"} and answers["good"].attempts == 1
    assert answers["late"].value == {"caption": "second"} and answers["late"].attempts == 2
    assert (answers["late"].prompt_tokens, answers["late"].generated_tokens) == (8, 4)  # both attempts
    assert (answers["good"].cached_tokens, answers["late"].cached_tokens) == (2, 3)
    assert answers["bad"].cached_tokens is None  # an engine error reports no prefix-cache count
    assert (answers["bad"].value, answers["bad"].error, answers["bad"].attempts) == (None, "engine died", 3)
    assert answers["lost"].error == "no output row"


def test_answers_land_in_their_rows_and_rows_that_ask_nothing_pass_through():
    batch = pa.table(
        {
            "user": ["a", "b", "c"],
            "s_requests": pa.array([[request_json({"messages": [], "schema": CAPTION})] * 2, [], [""]]),
        }
    )
    answers = {
        "0/0": LLMAnswer(
            "0/0", {"caption": "x"}, None, 1, prompt_tokens=3, generated_tokens=2, cached_tokens=1
        ),
        "0/1": LLMAnswer("0/1", None, "schema mismatch", 2, cached_tokens=0),
    }
    table = with_answers(batch, "s", answers)
    assert "s_requests" not in table.column_names and table["user"].to_pylist() == ["a", "b", "c"]
    rows = table.to_pylist()
    first = row_answers(rows[0], "s")
    assert [(a.value, a.error, a.attempts) for a in first] == [
        ({"caption": "x"}, None, 1),
        (None, "schema mismatch", 2),
    ]
    assert rows[0]["s_prompt_tokens"] == 3 and rows[1]["s_answers"] == []
    assert [row["s_cached_tokens"] for row in rows] == [1, 0, 0]  # "c" was never answered: nothing cached
    unreported = with_answers(batch, "s", answers | {"0/1": LLMAnswer("0/1", None, "engine died", 1)})
    assert unreported["s_cached_tokens"].to_pylist()[0] is None  # unknown, not counted as zero
    assert row_answers(rows[2], "s")[0].error == "no answer"  # asked, never answered: reported, not dropped


def _png_data_url(seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _image_request(seed: int) -> str:
    content = [
        {"type": "image_url", "image_url": {"url": _png_data_url(seed)}},
        {"type": "text", "text": "Describe the image."},
    ]
    return request_json({"messages": [{"role": "user", "content": content}], "schema": CAPTION})


@pytest.mark.slow
def test_tiny_vlm_describes_images_through_ray_data_vllm_processor(ray_cluster, tiny_models):
    # Tokens enough to close a 60-character caption: a truncated answer would cost a retry pass, and each
    # pass of the in-job processor starts its own engine (~50 s here).
    role = LLMRoleConfig(
        model_source="tiny://vlm", max_images_per_prompt=1, max_tokens=96, max_model_len=1024
    )
    rows = [
        {"item": f"item{i}", "kept": i * 10, "c_requests": [_image_request(i + j) for j in range(i % 3)]}
        for i in range(6)
    ]
    answered = LLMStep("c", role, seed=0)(ray_cluster.data.from_arrow(pa.Table.from_pylist(rows))).take_all()
    by_item = {row["item"]: row for row in answered}
    assert set(by_item) == {f"item{i}" for i in range(6)}
    for i in range(6):
        row = by_item[f"item{i}"]
        assert row["kept"] == i * 10 and "c_requests" not in row  # other columns pass through
        answers = row_answers(row, "c")
        assert len(answers) == i % 3  # one answer per request, in order; rows asking nothing get none
        assert all(a.error is None and isinstance(a.value["caption"], str) for a in answers)
        assert (row["c_prompt_tokens"] > 0) == bool(answers)
        assert row["c_cached_tokens"] is None  # ray.data.llm's processor does not report prefix-cache hits


@pytest.mark.slow
def test_chained_steps_share_one_serve_deployment(ray_cluster, tiny_models):
    from ray import serve

    # the engine settings of configs/demo.yaml's chat roles, so later tests reuse this deployment
    role = LLMRoleConfig(backend="serve", max_tokens=32, max_model_len=4096)
    choice = request_json({"messages": [{"role": "user", "content": "rank items"}], "schema": CHOICE})
    rows = [{"user": f"u{i}", "first_requests": [choice] * (i % 2 + 1)} for i in range(8)]

    def second_requests(batch: pa.Table) -> pa.Table:
        asked = [[choice] if i % 2 else [] for i in range(batch.num_rows)]
        return batch.append_column("second_requests", pa.array(asked, pa.list_(pa.string())))

    with pytest.raises(RuntimeError, match="did not start: it is not deployed"):
        wait_until_running({"tailormind-llm-never-deployed"})
    ds = ray_cluster.data.from_arrow(pa.Table.from_pylist(rows))
    first = LLMStep("first", role, seed=0)(ds)
    apps = set(serve.status().applications)
    out = LLMStep("second", role, seed=1)(first.map_batches(second_requests, batch_format="pyarrow"))
    answered = out.take_all()
    assert set(serve.status().applications) == apps  # both steps reached the same deployment
    assert sorted(row["user"] for row in answered) == [f"u{i}" for i in range(8)]
    for row in answered:
        firsts = row_answers(row, "first")
        assert len(firsts) == int(row["user"][1:]) % 2 + 1
        assert all(len(a.value["top"]) == 3 for a in firsts)
        assert all(a.error is None for a in row_answers(row, "second"))
        assert row["first_prompt_tokens"] > 0 and row["first_generated_tokens"] > 0
        assert 0 <= row["first_cached_tokens"] <= row["first_prompt_tokens"]  # vLLM's count, via Serve


def test_a_cpu_engine_computes_with_one_thread_per_cpu_of_its_bundle_and_a_gpu_engine_is_left_alone():
    cpu = placement(LLMRoleConfig(cpus_per_engine=2.0, tensor_parallel_size=2))
    assert cpu["placement_group_config"] == {"bundles": [{"CPU": 2.0}, {"CPU": 2.0}]}
    environment = cpu["runtime_env"]["env_vars"]
    assert environment["VLLM_CPU_OMP_THREADS_BIND"] == "nobind" and environment["OMP_NUM_THREADS"] == "2"
    assert environment["LD_PRELOAD"].split()[0].endswith("libiomp5.so")  # vllm-cpu installs Intel OpenMP
    assert placement(LLMRoleConfig(accelerator_type="H100")) == {"accelerator_type": "H100"}


def test_auto_dtype_is_bf16_on_gpus_and_cpus_with_bf16_units_and_float32_on_other_cpus(monkeypatch):
    def cpu_with(flags: str) -> None:
        monkeypatch.setattr(
            engine, "open", lambda _: io.StringIO(f"processor\t: 0\nflags\t\t: {flags}\n"), raising=False
        )

    cpu_with("fpu sse avx2 fma")  # an AVX2 CPU: vLLM's bf16 takes a slow path there
    assert engine.cpu_bf16_units() is None
    assert engine_kwargs(LLMRoleConfig())["dtype"] == "float32"
    assert engine_kwargs(LLMRoleConfig(accelerator_type="H100"))["dtype"] == "bfloat16"
    assert engine_kwargs(LLMRoleConfig(dtype="float16"))["dtype"] == "float16"  # as configured
    cpu_with("avx2 avx512f avx512_bf16")  # AMD Zen 4
    assert engine.cpu_bf16_units() == "avx512" and engine_kwargs(LLMRoleConfig())["dtype"] == "bfloat16"
    cpu_with("avx512f avx512_bf16 amx_bf16 amx_tile")  # Intel Sapphire Rapids and later
    assert engine.cpu_bf16_units() == "amx" and engine_kwargs(LLMRoleConfig())["dtype"] == "bfloat16"
    assert engine_kwargs(LLMRoleConfig(dtype="float32"))["dtype"] == "float32"


def test_kv_block_size_reaches_the_engine_and_must_be_whole_16_token_units():
    assert "block_size" not in engine_kwargs(LLMRoleConfig())  # vLLM's default (128 tokens on CPU)
    assert engine_kwargs(LLMRoleConfig(kv_block_size=32))["block_size"] == 32
    with pytest.raises(ValueError, match="multiple of 16"):
        LLMRoleConfig(kv_block_size=24)


def test_an_engine_process_preloads_intel_openmp_before_what_its_node_preloads(ray_cluster):
    environment = placement(LLMRoleConfig(cpus_per_engine=1.0))["runtime_env"]["env_vars"]

    @ray_cluster.remote(num_cpus=0, runtime_env={"env_vars": environment})
    def preloaded() -> str:
        return os.environ["LD_PRELOAD"]

    assert "LD_PRELOAD" not in os.environ  # the test cluster's nodes preload nothing
    assert ray_cluster.get(preloaded.remote()).split() == [environment["LD_PRELOAD"].split()[0]]


def test_a_step_refuses_rows_that_already_have_its_output_columns():
    batch = pa.table(
        {"s_requests": pa.array([[]], pa.list_(pa.string())), "s_errors": ["a stage's own column"]}
    )
    with pytest.raises(ValueError, match="already have: s_errors"):
        with_answers(batch, "s", {})


def test_http_client_comes_back_after_a_shed_request_without_spending_a_retry():
    """A 503 with Retry-After is waited out and sent again; a 503 without one is a failed attempt."""
    from runtime.chat import HttpChat

    calls: list[float] = []

    def reply(_: dict) -> Reply:
        calls.append(time.monotonic())
        if len(calls) == 1:
            return 503, None, {"Retry-After": "1"}
        return 200, {"choices": [{"message": {"content": json.dumps({"ok": "yes"})}}], "usage": {}}, {}

    with json_endpoint(reply) as base_url:
        role = LLMRoleConfig(model_source="tiny://chat", backend="http", base_url=base_url, max_retries=0)
        request = {
            "row_key": "a",
            "messages": [{"role": "user", "content": "hi"}],
            "schema": {"type": "object"},
        }
        answer = HttpChat(role, api_key="").answer([request], seed=0)["a"]
    assert answer.value == {"ok": "yes"} and answer.error is None
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.9  # waited as told, no role retry spent
