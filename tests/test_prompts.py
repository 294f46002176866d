"""Prompt templates: loading, rendering, hashing and refusal of missing or unknown variables."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dataspec import load_spec
from kbgen.llm.templates import (
    GLOBAL_TEMPLATE,
    JOINTS_TEMPLATE,
    PromptTemplate,
    TemplateError,
    load_template,
    prompt_variables,
)


@pytest.mark.parametrize("name", [GLOBAL_TEMPLATE, JOINTS_TEMPLATE])
def test_shipped_templates_use_exactly_the_three_variables(name: str) -> None:
    template = load_template(name)
    assert template.variables == {"action", "joints", "dataset"}
    assert template.sha256 == hashlib.sha256(template.content.encode()).hexdigest()


def test_rendered_prompt_names_action_dataset_and_every_joint() -> None:
    spec = load_spec("ntu120")
    action = spec.get_class("A1")
    text = load_template(JOINTS_TEMPLATE).render(**prompt_variables(spec, action))
    assert f'"{action.name}"' in text
    assert spec.title in text
    for joint in spec.joint_names:
        assert joint in text
    assert "$" not in text


def test_missing_variable_is_refused() -> None:
    template = PromptTemplate("t", "Describe $action for $dataset.")
    with pytest.raises(TemplateError, match="needs variable.*dataset"):
        template.render(action="drink water")


def test_unknown_variable_is_refused() -> None:
    template = PromptTemplate("t", "Describe $action.")
    with pytest.raises(TemplateError, match="has no variable.*actoin"):
        template.render(action="x", actoin="typo")


def test_malformed_placeholder_is_refused_at_load(tmp_path: Path) -> None:
    (tmp_path / "bad.md").write_text("costs 5$ for ${action", encoding="utf-8")
    with pytest.raises(TemplateError, match="malformed placeholder"):
        load_template("bad", tmp_path)


def test_missing_template_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="no prompt template 'nope'"):
        load_template("nope", tmp_path)


def test_hash_changes_with_wording() -> None:
    assert PromptTemplate("t", "a $action").sha256 != PromptTemplate("t", "an $action").sha256
