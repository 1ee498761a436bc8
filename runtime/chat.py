"""Chat clients of an LLM role: its Serve deployment or an OpenAI-compatible endpoint, with bounded retries.

The Serve ingress, the batch jobs' Ray Data steps and the generation actors all reach a role's LLM through
these, so structured output, retries and error reporting are the same everywhere.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from models.llm.config import LLMRoleConfig
from models.llm.requests import sampling_params, structured_chat_request
from models.llm.scoring import ScoredContinuation
from models.llm.structured import LLMAnswer, Outcome, answer_with_retries


class ChatClient(Protocol):
    """Answers structured chat requests (row_key, messages, schema) of one role, and scores continuations."""

    def answer(self, requests: list[dict[str, Any]], seed: int) -> dict[str, LLMAnswer]:
        """Answers by row_key; a request that fails every attempt carries its last error."""
        ...

    def score(self, requests: list[dict[str, Any]]) -> dict[str, ScoredContinuation]:
        """Log-probabilities of (row_key, prefix, continuation) requests, by row_key."""
        ...


@dataclass
class ServeChat:
    """A role's ray.serve.llm deployment, called through its handle (all requests of a call concurrently)."""

    handle: Any  # ray.serve.handle.DeploymentHandle
    role: LLMRoleConfig
    read_cache: bool = True  # False: every scored prompt computed whole (the naive cost, for measurements)

    @classmethod
    def for_role(cls, role: LLMRoleConfig) -> ServeChat:
        """The client of the deployment that ``runtime.llm.ensure_llm_deployment`` starts for ``role``."""
        from ray import serve

        from runtime.llm import deployment_names

        # importing ray.serve set its logger to INFO in this (client) process: its first request logged the
        # router's start into the job's console from every Ray Data worker
        logging.getLogger("ray.serve").setLevel(logging.WARNING)

        app_name, deployment_name = deployment_names(role)
        return cls(serve.get_deployment_handle(deployment_name, app_name), role)

    def answer(self, requests: list[dict[str, Any]], seed: int) -> dict[str, LLMAnswer]:
        """Answers by row_key, retrying failed rows up to the role's ``max_retries``."""
        from ray.serve.llm.openai_api_models import ChatCompletionRequest

        handle = self.handle.options(stream=True)

        def attempt(pending: list[dict[str, Any]], number: int) -> dict[str, Outcome]:
            streams = {
                r["row_key"]: handle.chat.remote(
                    ChatCompletionRequest(
                        **structured_chat_request(self.role, r["messages"], r["schema"], seed + number - 1)
                    ),
                    None,
                )
                for r in pending
            }
            return {key: _serve_outcome(stream) for key, stream in streams.items()}

        return answer_with_retries(requests, attempt, self.role.max_retries)

    def score(self, requests: list[dict[str, Any]]) -> dict[str, ScoredContinuation]:
        """One deployment call per distinct prefix (its continuations share the cached prefix), failed
        continuations sent again up to the role's ``max_retries``."""

        def attempt(pending: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
            by_prefix: dict[str, list[dict[str, Any]]] = {}
            for request in pending:
                by_prefix.setdefault(request["prefix"], []).append(request)
            calls = {
                prefix: self.handle.continuation_logprobs.remote(
                    prefix, [r["continuation"] for r in group], self.read_cache
                )
                for prefix, group in by_prefix.items()
            }
            results: dict[str, dict[str, Any]] = {}
            for prefix, call in calls.items():
                group = by_prefix[prefix]
                try:
                    scored = call.result()
                except Exception as exc:  # a failed deployment call fails its continuations, not the batch
                    scored = [{"error": f"{type(exc).__name__}: {exc}"[:300]}] * len(group)
                results.update({r["row_key"]: answer for r, answer in zip(group, scored, strict=True)})
            return results

        return scores_with_retries(requests, attempt, self.role.max_retries)


def scores_with_retries(
    requests: list[dict[str, Any]],
    attempt: Callable[[list[dict[str, Any]]], dict[str, dict[str, Any]]],
    max_retries: int,
) -> dict[str, ScoredContinuation]:
    """Score every request, then again those that failed, up to ``max_retries`` more times."""
    answers: dict[str, ScoredContinuation] = {}
    pending = list(requests)
    for _ in range(max_retries + 1):
        if not pending:
            break
        results = attempt(pending)
        for request in pending:
            got = results.get(request["row_key"]) or {"error": "no output"}
            answers[request["row_key"]] = ScoredContinuation(
                request["row_key"],
                got.get("logprob"),
                int(got.get("tokens") or 0),
                int(got.get("prompt_tokens") or 0),
                got.get("computed_tokens"),
                None if got.get("logprob") is not None else got.get("error") or "no log-probability",
            )
        pending = [r for r in pending if answers[r["row_key"]].logprob is None]
    return answers


def _serve_outcome(stream: Any) -> Outcome:
    """The outcome of a non-streaming chat call: LLMServer yields one response or an error."""
    try:
        for response in stream:
            choices = getattr(response, "choices", None)
            if choices:
                usage = getattr(response, "usage", None)
                details = getattr(usage, "prompt_tokens_details", None)
                return Outcome(
                    choices[0].message.content,
                    None,
                    getattr(usage, "prompt_tokens", 0) or 0,
                    getattr(usage, "completion_tokens", 0) or 0,
                    getattr(details, "cached_tokens", None),
                )
            error = getattr(response, "error", None)
            return Outcome(None, str(getattr(error, "message", error) or response)[:300])
    except Exception as exc:  # an engine failure is one failed attempt, never a crashed batch
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:300])
    return Outcome(None, "empty response stream")


SHED_RETRIES = 3  # times a request shed with 429/503 + Retry-After is sent again, after the wait it names


class _Failed(Exception):
    """One HTTP attempt failed; the message says why."""


@dataclass
class HttpChat:
    """An OpenAI-compatible ``/v1`` endpoint, up to ``role.batch_size`` requests in flight per call.

    A request the server sheds (429 or 503 with ``Retry-After``) is sent again after the wait it names, up to
    ``SHED_RETRIES`` times, without spending one of the role's retries.
    """

    role: LLMRoleConfig
    api_key: str | None = None  # None: read from the environment variable ``role.api_key_env`` here
    timeout_s: float = 600.0
    _next_slot: float = field(default=0.0, init=False, repr=False)
    _pace: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def answer(self, requests: list[dict[str, Any]], seed: int) -> dict[str, LLMAnswer]:
        """Answers by row_key, retrying failed rows up to the role's ``max_retries``."""
        url, headers = self._url("/chat/completions"), self._headers()

        def post(request: dict[str, Any], number: int) -> Outcome:
            schema = request["schema"]
            schema = json.loads(schema) if isinstance(schema, str) else schema
            body = dict(
                model=self.role.served_model_id,
                messages=request["messages"],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": schema, "strict": True},
                },
                **sampling_params(self.role, seed + number - 1),
            )
            try:
                payload = self._post(url, body, headers)
            except _Failed as failed:
                return Outcome(None, str(failed))
            choices = payload.get("choices") or []
            if not choices:
                return Outcome(None, f"a response without choices: {str(payload)[:200]}")
            usage = payload.get("usage") or {}
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
            return Outcome(
                choices[0]["message"]["content"],
                None,
                int(usage.get("prompt_tokens") or 0),
                int(usage.get("completion_tokens") or 0),
                None if cached is None else int(cached),
            )

        def attempt(pending: list[dict[str, Any]], number: int) -> dict[str, Outcome]:
            with ThreadPoolExecutor(max_workers=max(1, min(len(pending), self.role.batch_size))) as pool:
                outcomes = pool.map(lambda r: post(r, number), pending)
                return {r["row_key"]: outcome for r, outcome in zip(pending, outcomes, strict=True)}

        return answer_with_retries(requests, attempt, self.role.max_retries)

    def _url(self, route: str) -> str:
        if not self.role.base_url:
            from models.errors import TailorMindError

            raise TailorMindError(
                "an LLM role with backend 'http' needs base_url (an OpenAI-compatible /v1 URL)."
            )
        return self.role.base_url.rstrip("/") + route

    def _headers(self) -> dict[str, str]:
        key = self.api_key if self.api_key is not None else os.environ.get(self.role.api_key_env, "")
        return {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})

    def _post(self, url: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        """The JSON answer to one POST; a request the server sheds (429 or 503 with ``Retry-After``) is sent
        again after the wait it names; raises ``_Failed`` with the reason otherwise."""
        data = json.dumps(body).encode()
        for shed in range(SHED_RETRIES + 1):
            self._wait_for_slot()
            try:
                call = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(call, timeout=self.timeout_s) as response:
                    payload: dict[str, Any] = json.loads(response.read())
                    return payload
            except urllib.error.HTTPError as exc:
                wait = exc.headers.get("Retry-After", "")
                if exc.code in (429, 503) and wait.isdigit() and shed < SHED_RETRIES:
                    time.sleep(min(int(wait), 60))  # the server shed the request: come back when it says
                    continue
                raise _Failed(f"HTTP {exc.code}: {exc.read()[:200]!r}") from None
            except (OSError, ValueError) as exc:
                raise _Failed(f"{type(exc).__name__}: {exc}"[:300]) from None
        raise _Failed("shed by the server every time")

    def score(self, requests: list[dict[str, Any]]) -> dict[str, ScoredContinuation]:
        """Log-probabilities through the endpoint's completions route with ``echo`` and ``logprobs`` (the
        OpenAI way to score a prompt): the prompt tokens that start inside the continuation are summed. An
        endpoint that returns no prompt log-probabilities is a configuration error."""
        url = self._url("/completions")
        headers = self._headers()

        def post(request: dict[str, Any]) -> dict[str, Any]:
            prefix, continuation = request["prefix"], request["continuation"]
            body = {
                "model": self.role.served_model_id,
                "prompt": prefix + continuation,
                "max_tokens": 1,
                "temperature": 0.0,
                "echo": True,
                "logprobs": 0,
            }
            try:
                payload = self._post(url, body, headers)
            except _Failed as failed:
                return {"error": str(failed)}
            logprobs = ((payload.get("choices") or [{}])[0]).get("logprobs") or {}
            offsets, values = logprobs.get("text_offset"), logprobs.get("token_logprobs")
            if not offsets or not values:
                from models.errors import TailorMindError

                raise TailorMindError(
                    f"the LLM endpoint {self.role.base_url} (model {self.role.model_source}) returned no "
                    "prompt log-probabilities from /completions with echo and logprobs, which the likelihood "
                    "ranker needs: point the ranker role at a server that returns them (vLLM's OpenAI server "
                    "does), or set profiling.rank_mode to listwise."
                )
            start, end = len(prefix), len(prefix) + len(continuation)
            inside = [v for o, v in zip(offsets, values, strict=False) if start <= o < end]
            if any(v is None for v in inside):
                return {"error": "a continuation token without a log-probability"}
            usage = payload.get("usage") or {}
            return {
                "logprob": float(sum(inside)),
                "tokens": len(inside),
                "prompt_tokens": int(usage.get("prompt_tokens") or 0),
                "computed_tokens": None,
            }

        def attempt(pending: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
            with ThreadPoolExecutor(max_workers=max(1, min(len(pending), self.role.batch_size))) as pool:
                return {r["row_key"]: out for r, out in zip(pending, pool.map(post, pending), strict=True)}

        return scores_with_retries(requests, attempt, self.role.max_retries)

    def _wait_for_slot(self) -> None:
        """Keep this client under ``role.requests_per_second`` (when set)."""
        rate = self.role.requests_per_second
        if rate is None:
            return
        with self._pace:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / rate
        time.sleep(max(0.0, slot - now))


def chat_client(role: LLMRoleConfig, api_key: str | None = None) -> ChatClient:
    """The client of a role: its HTTP endpoint (backend http), else its Serve deployment."""
    return HttpChat(role, api_key) if role.backend == "http" else ServeChat.for_role(role)


@dataclass
class RoleClients:
    """``complete(requests, role_name)`` over role clients: what ``PostWriter`` and the profile route call.

    ``calls`` counts, per role, the requests, the answers still failed after retries, and the retries.
    """

    clients: Mapping[str, ChatClient]
    seed: int = 0
    calls: dict[str, list[int]] = field(default_factory=dict)

    def __call__(self, requests: list[dict[str, Any]], role_name: str) -> dict[str, LLMAnswer]:
        """Answers by row_key from the client of ``role_name``."""
        answers = self.clients[role_name].answer(requests, self.seed)
        before = self.calls.get(role_name, [0, 0, 0])
        self.calls[role_name] = [
            before[0] + len(requests),
            before[1] + sum(a.error is not None for a in answers.values()),
            before[2] + sum(a.attempts - 1 for a in answers.values()),
        ]
        return answers

    def take_calls(self) -> str:
        """The counts so far as JSON (``{role: [requests, failed, retries]}``), then zero."""
        counts, self.calls = json.dumps(self.calls), {}
        return counts
