"""The LLM client: the ``openai`` library against any OpenAI-compatible endpoint.

One :meth:`LlmClient.ask` asks one prompt and returns a validated answer:

- the answer's JSON schema goes out as ``response_format={"type": "json_schema", ...}``; only when
  the endpoint answers HTTP 400 about ``response_format``/``json_schema`` does the client fall back
  to JSON mode, then to a prompted JSON answer (the schema pasted into the prompt);
- timeouts, connection errors, 429 (honouring ``Retry-After``) and 5xx are retried by ``tenacity``
  with exponential backoff and full jitter;
- an answer that fails validation is asked again with the validation error appended, a bounded
  number of times;
- every attempt, failed ones too, is handed to a recorder (the store writes it to ``llm_calls``).

The API key lives only in the ``openai`` client object: it is never part of a recorded attempt,
and error texts are scrubbed of it before they are recorded.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
import openai
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from kbgen.llm.endpoint import endpoint_host
from kbgen.llm.schemas import AnswerError

T = TypeVar("T")

SYSTEM_PROMPT = (
    "You are a careful expert on human movement. You answer with one JSON object and nothing else."
)
# Response-format modes, strongest first; a client falls back along this list and stays there.
RESPONSE_MODES = ("json_schema", "json_object", "prompted")
# HTTP statuses that no retry will fix: stop the whole run instead of failing every class.
FATAL_STATUSES = (401, 403, 404)


@dataclass(frozen=True)
class ClientSettings:
    """Where and how to ask. ``api_key`` is excluded from ``repr`` so it never reaches a log line."""

    base_url: str
    model: str
    api_key: str = field(default="", repr=False)
    timeout_s: float = 300.0
    max_retries: int = 5
    max_invalid: int = 2
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    temperature: float = 0.2
    seed: int | None = 0
    frequency_penalty: float | None = None

    @property
    def endpoint_host(self) -> str:
        """Host and port of the endpoint: what is stored, never the URL's user info or path."""
        return endpoint_host(self.base_url) or ""


@dataclass
class CallAttempt:
    """One request to the endpoint and its outcome, as the store records it."""

    kind: str
    rendered_prompt: str
    model: str
    endpoint_host: str
    params: dict[str, Any]
    raw_answer: str | None
    status: str  # "ok" | "invalid" | "error"
    error: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    attempt: int


Recorder = Callable[[CallAttempt], Any]


@dataclass
class Answer(Generic[T]):
    """A validated answer, the recorder's handle of the call that produced it, and usage figures."""

    value: T
    call_ref: Any
    attempts: int
    prompt_tokens: int = 0
    completion_tokens: int = 0


class LlmError(RuntimeError):
    """Asking failed: retries or re-asks are exhausted, or the endpoint refused for good (``fatal``)."""

    def __init__(self, message: str, *, attempts: int, fatal: bool = False) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.fatal = fatal


class _FormatRejected(Exception):
    """The endpoint refused the response_format we sent (HTTP 400 naming it)."""


class LlmClient:
    """A thread-safe client for one endpoint and model; share one instance between worker threads."""

    def __init__(self, settings: ClientSettings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._sleep = sleep
        self._mode_index = 0
        self._mode_lock = threading.Lock()
        self._openai = openai.OpenAI(
            base_url=settings.base_url,
            # Local servers need no key, but the library insists on one.
            api_key=settings.api_key or "no-key",
            timeout=settings.timeout_s,
            max_retries=0,  # retries are ours (tenacity), so that every attempt is recorded
            http_client=httpx.Client(
                timeout=settings.timeout_s,
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            ),
        )

    @property
    def response_mode(self) -> str:
        """The response-format mode in use: json_schema, json_object or prompted."""
        return RESPONSE_MODES[self._mode_index]

    def close(self) -> None:
        """Close the HTTP connections."""
        self._openai.close()

    def ask(
        self,
        *,
        kind: str,
        prompt: str,
        schema_name: str,
        schema: dict[str, Any],
        parse: Callable[[str], T],
        recorder: Recorder,
        max_tokens: int,
    ) -> Answer[T]:
        """Ask one prompt until ``parse`` accepts the answer; every attempt goes to ``recorder``.

        Raises:
            LlmError: transport retries or invalid-answer re-asks are exhausted, or the endpoint
                refused the request for good (``fatal`` is then set: stop the run).
        """
        messages: list[dict[str, str]] = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": prompt},
        ]
        counter = _AttemptCounter()
        tokens = [0, 0]
        last_error = ""
        for _ in range(self.settings.max_invalid + 1):
            raw, attempt = self._request(
                kind, messages, schema_name, schema, recorder, counter, tokens, max_tokens
            )
            try:
                value = parse(raw)
            except AnswerError as exc:
                last_error = str(exc)
                attempt.status, attempt.error = "invalid", last_error
                recorder(attempt)
                messages = [
                    *messages,
                    {"role": "assistant", "content": raw},
                    {
                        "role": "user",
                        "content": f"Your answer was invalid: {last_error}. "
                        "Answer again with the corrected JSON object only.",
                    },
                ]
                continue
            attempt.status = "ok"
            call_ref = recorder(attempt)
            return Answer(value, call_ref, counter.value, tokens[0], tokens[1])
        raise LlmError(
            f"{kind} answer still invalid after {self.settings.max_invalid + 1} tries: {last_error}",
            attempts=counter.value,
        )

    def _request(
        self,
        kind: str,
        messages: list[dict[str, str]],
        schema_name: str,
        schema: dict[str, Any],
        recorder: Recorder,
        counter: _AttemptCounter,
        tokens: list[int],
        max_tokens: int,
    ) -> tuple[str, CallAttempt]:
        """One request with transport retries: the raw answer and its attempt, not yet recorded.

        The caller records a successful HTTP attempt once parsing tells whether it is ok or invalid;
        failed HTTP attempts are recorded here.
        """

        def once() -> tuple[str, CallAttempt]:
            mode = self.response_mode
            sent = _messages_for_mode(messages, mode, schema)
            params = self._params(mode, max_tokens)
            attempt = CallAttempt(
                kind=kind,
                rendered_prompt=_transcript(sent),
                model=self.settings.model,
                endpoint_host=self.settings.endpoint_host,
                params=params,
                raw_answer=None,
                status="error",
                error=None,
                prompt_tokens=None,
                completion_tokens=None,
                latency_s=0.0,
                attempt=counter.next(),
            )
            start = time.perf_counter()
            try:
                completion = self._openai.chat.completions.create(
                    model=self.settings.model,
                    messages=sent,  # type: ignore[arg-type]
                    max_tokens=max_tokens,
                    temperature=self.settings.temperature,
                    **self._optional_params(),
                    **_response_format(mode, schema_name, schema),
                )
            except openai.APIError as exc:
                attempt.latency_s = time.perf_counter() - start
                attempt.error = self._scrub(_describe(exc))
                recorder(attempt)
                if _rejects_format(exc) and self._fall_back(mode):
                    raise _FormatRejected from exc
                raise
            attempt.latency_s = time.perf_counter() - start
            choice = completion.choices[0] if completion.choices else None
            # A refusal comes without content: keep its text as the answer, so the logs show it.
            message = choice.message if choice else None
            attempt.raw_answer = (message and (message.content or getattr(message, "refusal", None))) or ""
            if completion.usage is not None:
                attempt.prompt_tokens = completion.usage.prompt_tokens
                attempt.completion_tokens = completion.usage.completion_tokens
                tokens[0] += completion.usage.prompt_tokens or 0
                tokens[1] += completion.usage.completion_tokens or 0
            if choice is not None and choice.finish_reason == "length":
                attempt.params = {**attempt.params, "finish_reason": "length"}
            return attempt.raw_answer, attempt

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, _FormatRejected) or _is_transient(e)),
            stop=_stop_unless_format(self.settings.max_retries + 1),
            wait=self._wait,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(once)
        except openai.APIStatusError as exc:
            fatal = exc.status_code in FATAL_STATUSES
            raise LlmError(
                f"{kind} request failed: {self._scrub(_describe(exc))}", attempts=counter.value, fatal=fatal
            ) from None
        except openai.APIError as exc:
            raise LlmError(
                f"{kind} request failed after {self.settings.max_retries + 1} attempts: "
                f"{self._scrub(_describe(exc))}",
                attempts=counter.value,
            ) from None

    def _params(self, mode: str, max_tokens: int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "temperature": self.settings.temperature,
            "max_tokens": max_tokens,
            "response_format": mode,
        }
        return {**params, **self._optional_params()}

    def _optional_params(self) -> dict[str, Any]:
        """Sampling parameters sent only when set, so endpoints keep their own defaults."""
        optional = {"seed": self.settings.seed, "frequency_penalty": self.settings.frequency_penalty}
        return {k: v for k, v in optional.items() if v is not None}

    def _fall_back(self, mode: str) -> bool:
        """Move to the next weaker response mode; False when there is none left."""
        with self._mode_lock:
            current = RESPONSE_MODES.index(mode)
            if current + 1 >= len(RESPONSE_MODES):
                return False
            self._mode_index = max(self._mode_index, current + 1)
            return True

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _FormatRejected):
            return 0.0
        retry_after = _retry_after_s(exc)
        if retry_after is not None:
            return min(retry_after, self.settings.backoff_max_s)
        # Exponential backoff with full jitter: uniform in [0, base * 2^(n-1)], capped.
        ceiling = min(self.settings.backoff_max_s, self.settings.backoff_s * 2 ** (state.attempt_number - 1))
        return random.uniform(0, ceiling)

    def _scrub(self, text: str) -> str:
        key = self.settings.api_key
        return text.replace(key, "***") if key else text


class _AttemptCounter:
    def __init__(self) -> None:
        self.value = 0

    def next(self) -> int:
        self.value += 1
        return self.value


def _stop_unless_format(max_attempts: int) -> Callable[[RetryCallState], bool]:
    """Stop after ``max_attempts`` transport failures; format fallbacks do not count."""
    base = stop_after_attempt(max_attempts)

    def stop(state: RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _FormatRejected):
            return False
        return base(state)

    return stop


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return False


def _rejects_format(exc: openai.APIError) -> bool:
    if not isinstance(exc, openai.APIStatusError) or exc.status_code != 400:
        return False
    text = _describe(exc).lower()
    return "response_format" in text or "json_schema" in text or "response format" in text


def _retry_after_s(exc: BaseException | None) -> float | None:
    """Seconds the server asked us to wait (``Retry-After`` or ``retry-after-ms``), if it did."""
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        if "retry-after" in headers:
            return max(0.0, float(headers["retry-after"]))
    except ValueError:  # an HTTP date: rare for APIs; fall back to our own backoff
        return None
    return None


def _describe(exc: openai.APIError) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"
    if isinstance(exc, openai.APITimeoutError):
        return "timed out waiting for the endpoint"
    return f"{exc.__class__.__name__}: {exc.message}"


def _response_format(mode: str, schema_name: str, schema: dict[str, Any]) -> dict[str, Any]:
    if mode == "json_schema":
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": schema_name, "schema": schema, "strict": True},
            }
        }
    if mode == "json_object":
        return {"response_format": {"type": "json_object"}}
    return {}


def _messages_for_mode(
    messages: list[dict[str, str]], mode: str, schema: dict[str, Any]
) -> list[dict[str, str]]:
    """Without schema enforcement by the endpoint, the schema goes into the first user message."""
    if mode == "json_schema":
        return messages
    first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
    out = [dict(m) for m in messages]
    out[first_user]["content"] += "\n\nReply with JSON only, matching this JSON schema:\n" + json.dumps(
        schema, indent=1
    )
    return out


def _transcript(messages: list[dict[str, str]]) -> str:
    """The text stored as the rendered prompt: the user prompt, or the whole exchange on a re-ask."""
    turns = [m for m in messages if m["role"] != "system"]
    if len(turns) == 1:
        return turns[0]["content"]
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in turns)
