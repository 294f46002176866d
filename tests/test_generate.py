"""kbgen generate against a local fake endpoint: storage, secrets, resume, idempotence, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

import kbgen.cli.generate
import kbgen.cli.inspect  # noqa: F401  (registers show)
from dataspec import load_spec
from kbgen.cli.app import app
from kbgen.generate import generate
from kbgen.llm.client import ClientSettings, LlmClient
from kbgen.store import db, repo
from kbgen.store.models import Description, LlmCall, Run
from kbgen.testing.fake_openai import FakeOpenAIServer, Reply

SPEC = load_spec("nwucla")
KEY = "sk-generate-secret-987654321"
runner = CliRunner()


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def make_client(server: FakeOpenAIServer, **overrides: object) -> LlmClient:
    settings = dict(base_url=server.base_url, model="fake", api_key=KEY, backoff_s=0.001, max_retries=1)
    settings.update(overrides)
    return LlmClient(ClientSettings(**settings))  # type: ignore[arg-type]


def count(model: type) -> int:
    with db.session_scope() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_generates_every_class_and_records_every_call(server: FakeOpenAIServer) -> None:
    summary = generate(SPEC, make_client(server), concurrency=4)
    assert summary.count("done") == SPEC.num_classes and summary.count("failed") == 0
    assert len(server.requests) == 2 * SPEC.num_classes
    assert count(Description) == SPEC.num_classes * (1 + SPEC.num_joints)
    with db.session_scope() as s:
        calls = list(s.scalars(select(LlmCall)))
        assert {c.status for c in calls} == {"ok"} and len(calls) == 2 * SPEC.num_classes
        assert all(c.template_id is not None and c.run_id == summary.run_id for c in calls)
        assert all(c.endpoint_host == server.base_url.split("//")[1].removesuffix("/v1") for c in calls)
        run = s.get(Run, summary.run_id)
        assert run.status == "ok" and run.kind == "generate" and run.summary["done"] == SPEC.num_classes
        kb = repo.current_kb(s, repo.get_class(s, "nwucla", "a01"))
        assert kb.complete and list(kb.joints) == SPEC.joint_names
        global_row = repo.current_description(s, repo.get_class(s, "nwucla", "a01"), "global")
        assert global_row.call.kind == "global" and global_row.call.status == "ok"


def test_the_api_key_never_reaches_the_database_file(server: FakeOpenAIServer, _isolated_home: Path) -> None:
    server.enqueue(Reply(status=500, error=f"upstream said {KEY}"))
    generate(SPEC, make_client(server), class_ids=["a01"])
    db.dispose_all()  # checkpoint and close, so everything is in the files we read
    stored = b"".join(p.read_bytes() for p in _isolated_home.glob("kbgen.db*"))
    assert b"sk-generate" not in stored and KEY.encode() not in stored
    assert len(stored) > 0


def test_rerun_skips_complete_classes_and_duplicates_nothing(server: FakeOpenAIServer) -> None:
    generate(SPEC, make_client(server), class_ids=["a01", "a02"])
    before = (count(Description), len(server.requests))
    summary = generate(SPEC, make_client(server), class_ids=["a01", "a02"])
    assert summary.count("skipped") == 2
    assert (count(Description), len(server.requests)) == before


def test_force_asks_again_but_identical_texts_make_no_new_versions(server: FakeOpenAIServer) -> None:
    generate(SPEC, make_client(server), class_ids=["a01"])
    before = count(Description)
    summary = generate(SPEC, make_client(server), class_ids=["a01"], force=True)
    assert summary.count("done") == 1 and len(server.requests) == 4
    assert count(Description) == before


def test_a_failed_half_is_the_only_thing_asked_again(server: FakeOpenAIServer) -> None:
    def fail_joints(request: dict) -> Reply:
        is_joints = "joint_answer" in json.dumps(request.get("response_format"))
        return Reply(status=503) if is_joints else Reply()

    server.responder = fail_joints
    first = generate(SPEC, make_client(server), class_ids=["a03"])
    assert first.count("failed") == 1 and "HTTP 503" in (first.outcomes[0].error or "")
    with db.session_scope() as s:
        kb = repo.current_kb(s, repo.get_class(s, "nwucla", "a03"))
        assert kb.global_text is not None and not kb.joints
        assert s.get(Run, first.run_id).status == "failed"
    server.responder = server._valid_reply
    asked = len(server.requests)
    second = generate(SPEC, make_client(server), class_ids=["a03"])
    assert second.count("done") == 1
    assert len(server.requests) == asked + 1  # only the joint prompt
    assert "joint_answer" in json.dumps(server.requests[-1]["response_format"])


def test_invalid_answers_are_logged_and_retried(server: FakeOpenAIServer) -> None:
    server.enqueue(Reply(content='{"head": "nods"}'))
    summary = generate(SPEC, make_client(server), class_ids=["a04"], concurrency=1)
    assert summary.count("done") == 1 and summary.retried == 1
    with db.session_scope() as s:
        statuses = sorted(c.status for c in s.scalars(select(LlmCall)))
    assert statuses == ["invalid", "ok", "ok"]


def test_fatal_endpoint_error_stops_the_run(server: FakeOpenAIServer) -> None:
    server.responder = lambda request: Reply(status=401, error="bad key")
    summary = generate(SPEC, make_client(server), concurrency=1)
    assert summary.fatal_error and "HTTP 401" in summary.fatal_error
    assert len(server.requests) == 1
    assert summary.count("done") == 0


def test_cli_generate_then_show(server: FakeOpenAIServer) -> None:
    args = [
        "generate",
        "-d",
        "nwucla",
        "--classes",
        "a01,a5",
        "--base-url",
        server.base_url,
        "--model",
        "fake",
    ]
    result = runner.invoke(app, args, env={"OPENAI_API_KEY": KEY})
    assert result.exit_code == 0, result.output
    assert "2 done" in result.output and KEY not in result.output
    shown = json.loads(runner.invoke(app, ["show", "-d", "nwucla", "a05", "--json"]).stdout)
    assert shown["class_id"] == "a05" and len(shown["joints"]) == SPEC.num_joints and shown["global"]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--base-url", "http://127.0.0.1:9/v1"], "--model is required"),
        (["--classes", "a07"], "class 'a07' is not in dataset nwucla"),
        (["--local-model", "/nonexistent/model.gguf"], "no GGUF model file"),
    ],
)
def test_cli_user_errors_are_one_line(args: list[str], expected: str) -> None:
    result = runner.invoke(app, ["generate", "-d", "nwucla", *args])
    assert result.exit_code != 0
    assert expected in result.output and "Traceback" not in result.output


def test_cli_exits_nonzero_when_classes_fail(server: FakeOpenAIServer) -> None:
    server.responder = lambda request: Reply(status=500)
    args = ["generate", "-d", "nwucla", "-c", "a01", "--base-url", server.base_url, "--model", "fake"]
    result = runner.invoke(app, [*args, "--max-retries", "0"])
    assert result.exit_code == 1
    assert "1 class(es) failed" in result.output


def test_killed_run_continues_on_rerun_without_duplicates(_isolated_home: Path) -> None:
    with FakeOpenAIServer(delay_s=0.3) as server:
        args = [str(Path(sys.executable).parent / "kbgen"), "generate", "-d", "nwucla", "-j", "2"]
        args += ["--base-url", server.base_url, "--model", "fake"]
        env = {**os.environ, "KBGEN_HOME": str(_isolated_home)}
        child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while len(server.requests) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed_after = len(server.requests)
        assert 6 <= killed_after < 2 * SPEC.num_classes
        summary = generate(SPEC, make_client(server), concurrency=4)
        assert summary.count("skipped") >= 1  # classes finished before the kill are not asked again
        assert len(server.requests) - killed_after < 2 * SPEC.num_classes
    with db.session_scope() as s:
        rows = s.execute(select(Description.class_pk, Description.kind, Description.joint_position)).all()
        assert len(rows) == len(set(rows)) == SPEC.num_classes * (1 + SPEC.num_joints)
        assert all(
            repo.current_kb(s, c).complete for c in repo.list_classes(s, repo.get_dataset(s, "nwucla"))
        )
