"""The LLM client against a local fake OpenAI-compatible server: payload, retries, re-asks, fallback."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from dataspec import load_spec
from kbgen.llm.client import CallAttempt, ClientSettings, LlmClient, LlmError
from kbgen.llm.schemas import global_json_schema, joint_json_schema, parse_global_answer, parse_joint_answer
from kbgen.testing.fake_openai import FakeOpenAIServer, Reply

SPEC = load_spec("nwucla")
KEY = "sk-test-secret-123456"
GOOD_GLOBAL = json.dumps({"key_body_parts": ["right hand"], "description": "Bend and pick it up."})


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


class Harness:
    """A client on the fake server with recorded attempts and recorded (not slept) waits."""

    def __init__(self, server: FakeOpenAIServer, **overrides: object) -> None:
        settings = dict(
            base_url=server.base_url, model="fake-model", api_key=KEY, backoff_s=0.01, timeout_s=5.0
        )
        settings.update(overrides)
        self.waits: list[float] = []
        self.client = LlmClient(ClientSettings(**settings), sleep=self.waits.append)  # type: ignore[arg-type]
        self.attempts: list[CallAttempt] = []

    def record(self, attempt: CallAttempt) -> int:
        self.attempts.append(attempt)
        return len(self.attempts)

    def ask_global(self):
        return self.client.ask(
            kind="global",
            prompt="Describe pick up.",
            schema_name="global_answer",
            schema=global_json_schema(SPEC),
            parse=parse_global_answer,
            recorder=self.record,
            max_tokens=256,
        )

    def ask_joints(self):
        return self.client.ask(
            kind="joints",
            prompt="Describe each joint.",
            schema_name="joint_answer",
            schema=joint_json_schema(SPEC),
            parse=lambda raw: parse_joint_answer(raw, SPEC),
            recorder=self.record,
            max_tokens=1024,
        )

    def statuses(self) -> list[str]:
        return [a.status for a in self.attempts]


def test_sends_json_schema_and_records_the_call_without_the_key(server: FakeOpenAIServer) -> None:
    h = Harness(server)
    answer = h.ask_joints()
    assert list(answer.value.joints) == SPEC.joint_names
    request = server.requests[0]
    assert request["model"] == "fake-model"
    assert request["response_format"]["type"] == "json_schema"
    assert request["response_format"]["json_schema"]["schema"] == joint_json_schema(SPEC)
    assert request["messages"][-1]["content"] == "Describe each joint."
    headers = {k.lower(): v for k, v in server.request_headers[0].items()}
    assert headers["authorization"] == f"Bearer {KEY}"
    (attempt,) = h.attempts
    assert answer.call_ref == 1 and answer.attempts == 1
    assert attempt.status == "ok" and attempt.attempt == 1
    assert attempt.endpoint_host == server.base_url.split("//")[1].removesuffix("/v1")
    assert attempt.prompt_tokens == 100 and attempt.completion_tokens == 50
    assert attempt.params["response_format"] == "json_schema"
    assert KEY not in repr(attempt) and KEY not in repr(h.client.settings)


def test_429_honours_retry_after(server: FakeOpenAIServer) -> None:
    server.enqueue(Reply(status=429, headers={"Retry-After": "3"}), Reply(content=GOOD_GLOBAL))
    h = Harness(server)
    assert h.ask_global().value.description == "Bend and pick it up."
    assert h.waits == [3.0]
    assert h.statuses() == ["error", "ok"]
    assert "HTTP 429" in (h.attempts[0].error or "")


def test_5xx_is_retried_with_growing_jittered_backoff(server: FakeOpenAIServer) -> None:
    server.enqueue(Reply(status=500), Reply(status=503), Reply(status=502), Reply(content=GOOD_GLOBAL))
    h = Harness(server, backoff_s=1.0)
    answer = h.ask_global()
    assert answer.attempts == 4
    assert h.statuses() == ["error", "error", "error", "ok"]
    assert [a.attempt for a in h.attempts] == [1, 2, 3, 4]
    assert len(h.waits) == 3
    for n, wait in enumerate(h.waits):
        assert 0 <= wait <= 2**n


def test_timeout_is_retried(server: FakeOpenAIServer) -> None:
    server.enqueue(Reply(content=GOOD_GLOBAL, delay_s=1.5), Reply(content=GOOD_GLOBAL))
    h = Harness(server, timeout_s=0.3)
    h.ask_global()
    assert h.statuses() == ["error", "ok"]
    assert "timed out" in (h.attempts[0].error or "")


def test_dropped_connection_is_retried(server: FakeOpenAIServer) -> None:
    server.enqueue(Reply(drop_connection=True), Reply(content=GOOD_GLOBAL))
    h = Harness(server)
    h.ask_global()
    assert h.statuses() == ["error", "ok"]


def test_retries_are_bounded(server: FakeOpenAIServer) -> None:
    server.enqueue(*[Reply(status=500)] * 10)
    h = Harness(server, max_retries=2)
    with pytest.raises(LlmError, match="HTTP 500") as err:
        h.ask_global()
    assert err.value.attempts == 3 and not err.value.fatal
    assert len(server.requests) == 3


def test_malformed_json_is_asked_again_with_the_error(server: FakeOpenAIServer) -> None:
    server.enqueue(Reply(content='{"key_body_parts": ["hand"], "descr'), Reply(content=GOOD_GLOBAL))
    h = Harness(server)
    answer = h.ask_global()
    assert answer.attempts == 2 and answer.call_ref == 2
    assert h.statuses() == ["invalid", "ok"]
    assert "not valid JSON" in (h.attempts[0].error or "")
    retry_messages = server.requests[1]["messages"]
    assert retry_messages[-2] == {"role": "assistant", "content": '{"key_body_parts": ["hand"], "descr'}
    assert "not valid JSON" in retry_messages[-1]["content"]
    assert "not valid JSON" in h.attempts[1].rendered_prompt  # the stored prompt is what the model saw


def test_wrong_joints_are_asked_again_then_given_up(server: FakeOpenAIServer) -> None:
    wrong = json.dumps({"head": "nods", "tail": "wags"})
    server.enqueue(*[Reply(content=wrong)] * 3)
    h = Harness(server, max_invalid=2)
    with pytest.raises(LlmError, match="still invalid after 3 tries.*unknown joints 'tail'"):
        h.ask_joints()
    assert h.statuses() == ["invalid"] * 3
    assert "missing joints" in server.requests[1]["messages"][-1]["content"]


def test_falls_back_only_when_the_endpoint_rejects_response_format(server: FakeOpenAIServer) -> None:
    server.enqueue(
        Reply(status=400, error="response_format of type json_schema is not supported"),
        Reply(status=400, error="'response_format' is not supported by this model"),
        Reply(content="```json\n" + GOOD_GLOBAL + "\n```"),
    )
    h = Harness(server)
    h.ask_global()
    formats = [r.get("response_format") for r in server.requests]
    assert formats == [formats[0], {"type": "json_object"}, None]
    assert "matching this JSON schema" in server.requests[2]["messages"][1]["content"]
    assert h.client.response_mode == "prompted"
    assert h.waits == [0.0, 0.0]
    server.enqueue(Reply(content=GOOD_GLOBAL))
    h.ask_global()  # the mode sticks: no more rejected requests
    assert server.requests[3].get("response_format") is None


def test_other_400_is_not_retried(server: FakeOpenAIServer) -> None:
    server.enqueue(Reply(status=400, error="max_tokens is too large"))
    h = Harness(server)
    with pytest.raises(LlmError, match="max_tokens is too large"):
        h.ask_global()
    assert len(server.requests) == 1 and h.client.response_mode == "json_schema"


def test_auth_failure_is_fatal_and_the_key_is_scrubbed(server: FakeOpenAIServer) -> None:
    server.enqueue(Reply(status=401, error=f"invalid api key {KEY}"))
    h = Harness(server)
    with pytest.raises(LlmError) as err:
        h.ask_global()
    assert err.value.fatal
    assert KEY not in str(err.value) and KEY not in (h.attempts[0].error or "")


def test_optional_sampling_parameters_are_sent_only_when_set(server: FakeOpenAIServer) -> None:
    Harness(server, seed=None).ask_global()
    assert "frequency_penalty" not in server.requests[0] and "seed" not in server.requests[0]
    h = Harness(server, frequency_penalty=0.4)
    h.ask_global()
    assert server.requests[1]["frequency_penalty"] == 0.4 and server.requests[1]["seed"] == 0
    assert h.attempts[0].params["frequency_penalty"] == 0.4
