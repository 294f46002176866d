"""Security: API keys never stored or printed; SQL only through the ORM or bound parameters;
checkpoints only with ``weights_only=True``. Import size bounds: see test_reliability_inputs.py.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kbgen.cli.app import _load_commands
from kbgen.cli.app import app as kbgen
from kbgen.store import db
from kbgen.testing.fake_openai import FakeOpenAIServer, Reply
from kbgen.testing.faults import FaultInjector, FaultPlan

_load_commands()
runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]
KEY = "sk-proj-SECRET-4f9a1c7e2b8d"
# Parts of the key that must not appear either (a log that cuts or masks half of it still leaks).
KEY_PARTS = (KEY, "SECRET-4f9a1c7e2b8d", "4f9a1c7e2b8d")


def _no_key_in(where: str, data: bytes | str) -> None:
    blob = data if isinstance(data, bytes) else data.encode()
    for part in KEY_PARTS:
        assert part.encode() not in blob, f"the API key leaked into {where}"


def test_api_key_reaches_no_database_log_export_or_output(_isolated_home: Path, tmp_path: Path) -> None:
    injector = FaultInjector(FaultPlan(rate=0.0))
    calls = {"n": 0}

    def responder(request: dict) -> Reply:
        # Endpoints echo credentials in errors (proxies, misconfigured gateways): the first answers
        # of each prompt quote the key back; the client must scrub it before recording.
        calls["n"] += 1
        if calls["n"] <= 2:
            return Reply(status=500, error=f"upstream rejected key {KEY} for this project")
        return injector(request)

    with FakeOpenAIServer(responder=responder) as server:
        generate = ["generate", "-d", "nwucla", "-c", "a01", "--base-url", server.base_url, "--model", "fake"]
        result = runner.invoke(kbgen, generate, env={"OPENAI_API_KEY": KEY})
        assert result.exit_code == 0, result.output
        # The key did go out, as a bearer token: the test is not vacuous.
        sent = [{k.lower(): v for k, v in h.items()} for h in server.request_headers]
        assert any(h.get("authorization") == f"Bearer {KEY}" for h in sent)
        flag = runner.invoke(kbgen, [*generate, "-c", "a02", "--api-key", KEY])
        assert flag.exit_code == 0, flag.output
    outputs = [result.output, flag.output]
    for args in (
        ["logs", "-n", "0", "--json"],
        ["logs", "-n", "0"],
        ["logs", "--failed", "-n", "0", "--json"],
        ["show", "-d", "nwucla", "a01", "--json"],
        ["history", "-d", "nwucla", "a01", "--json"],
        ["list", "-d", "nwucla", "--json"],
        ["export", "-d", "nwucla"],
        ["export", "-d", "nwucla", "-o", str(tmp_path / "kb.json")],
    ):
        shown = runner.invoke(kbgen, args)
        assert shown.exit_code == 0, shown.output
        outputs.append(shown.output)
    failed = json.loads(outputs[4])
    assert len(failed) == 2 and all("***" in row["error"] for row in failed)  # scrubbed, not dropped
    for text in outputs:
        _no_key_in("the CLI output", text)
    db.dispose_all()  # checkpoint the WAL so the database files hold everything
    files = [p for p in [*_isolated_home.rglob("*"), *tmp_path.rglob("*")] if p.is_file()]
    assert any(p.name == "kbgen.db" for p in files)
    for path in files:
        _no_key_in(str(path), path.read_bytes())


def test_the_trainer_never_reads_llm_credentials() -> None:
    # Run directories hold only what the trainer knows; it has no way to learn an API key.
    for path in (REPO / "trainer").rglob("*.py"):
        source = path.read_text()
        for word in ("API_KEY", "OPENAI", "api_key"):
            assert word not in source, f"{path} mentions {word}"


# --------------------------------------------------------------------------- SQL and pickles

_SQL_CALLS = {"text", "execute", "exec_driver_sql", "executescript", "executemany"}
# Built SQL that holds no outside value: a constant of the module.
_ALLOWED_BUILT_SQL = {("kbgen/store/db.py", "PRAGMA busy_timeout")}


def _python_sources() -> list[Path]:
    folders = ("kbgen", "trainer", "dataspec", "migrations")
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def _is_built_string(node: ast.expr) -> bool:
    """An f-string, ``%``/``+`` formatting or ``.format()``: SQL assembled from values."""
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"


def test_sql_is_never_assembled_from_values() -> None:
    offenders = []
    for path in _python_sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name not in _SQL_CALLS or not _is_built_string(node.args[0]):
                continue
            snippet = ast.get_source_segment(path.read_text(), node.args[0]) or ""
            rel = path.relative_to(REPO).as_posix()
            if any(rel == f and marker in snippet for f, marker in _ALLOWED_BUILT_SQL):
                continue
            offenders.append(f"{rel}:{node.lineno}: {snippet[:80]}")
    assert not offenders, "SQL built from values (use the ORM or bound parameters):\n" + "\n".join(offenders)


def test_the_sql_check_catches_an_f_string() -> None:
    bad = ast.parse("session.execute(text(f\"SELECT * FROM classes WHERE name = '{name}'\"))")
    calls = [n for n in ast.walk(bad) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "text"]
    assert calls and _is_built_string(calls[0].args[0])


@pytest.mark.parametrize("package", ["trainer", "kbgen", "bench"])
def test_every_torch_load_is_weights_only(package: str) -> None:
    loads = 0
    for path in sorted((REPO / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            func = getattr(node, "func", None)
            if not (
                isinstance(node, ast.Call)
                and isinstance(func, ast.Attribute)
                and func.attr == "load"
                and isinstance(func.value, ast.Name)
                and func.value.id == "torch"
            ):
                continue
            loads += 1
            flags = {k.arg: k.value for k in node.keywords}
            value = flags.get("weights_only")
            assert isinstance(value, ast.Constant) and value.value is True, (
                f"{path}:{node.lineno}: torch.load without weights_only=True"
            )
    if package == "trainer":
        assert loads >= 1  # the checkpoint loader itself is found by this scan
