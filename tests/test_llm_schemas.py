"""Answer schemas: the global answer and the strict one-text-per-joint answer."""

from __future__ import annotations

import json
import re

import pytest

from dataspec import load_spec
from kbgen.llm.schemas import (
    AnswerError,
    global_json_schema,
    joint_json_schema,
    parse_global_answer,
    parse_joint_answer,
)

NWUCLA = load_spec("nwucla")


def _joints(**overrides: str) -> dict[str, str]:
    answer = {name: f"The {name} moves." for name in NWUCLA.joint_names}
    answer.update(overrides)
    return answer


def test_valid_global_answer_is_stripped() -> None:
    answer = parse_global_answer(json.dumps({"key_body_parts": [" right hand "], "description": " Reach. "}))
    assert answer.key_body_parts == ["right hand"]
    assert answer.description == "Reach."


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"key_body_parts": [], "description": "x"}, "key_body_parts"),
        ({"key_body_parts": ["hand"], "description": "   "}, "description"),
        ({"key_body_parts": ["hand"]}, "description"),
        ({"key_body_parts": ["hand"], "description": "x", "extra": 1}, "extra"),
    ],
)
def test_invalid_global_answers_are_rejected(payload: dict, message: str) -> None:
    with pytest.raises(AnswerError, match=message):
        parse_global_answer(json.dumps(payload))


def test_malformed_json_is_rejected_with_position() -> None:
    with pytest.raises(AnswerError, match="not valid JSON"):
        parse_global_answer('{"key_body_parts": ["hand"], "description": ')


def test_code_fenced_json_is_accepted() -> None:
    raw = '```json\n{"key_body_parts": ["head"], "description": "Nod."}\n```'
    assert parse_global_answer(raw).description == "Nod."


def test_valid_joint_answer_in_spec_order_with_aliases_normalised() -> None:
    answer = _joints()
    del answer["shoulder center"]
    answer["Neck"] = "The neck stays still."  # alias of 'shoulder center', different case
    parsed = parse_joint_answer(json.dumps(answer), NWUCLA)
    assert list(parsed.joints) == NWUCLA.joint_names
    assert parsed.joints["shoulder center"] == "The neck stays still."


def test_list_form_is_accepted() -> None:
    items = [{"joint": n, "description": t} for n, t in _joints().items()]
    assert parse_joint_answer(json.dumps({"joints": items}), NWUCLA).joints == _joints()


def test_missing_joint_is_rejected() -> None:
    answer = _joints()
    del answer["left knee"]
    with pytest.raises(AnswerError, match="missing joints 'left knee'"):
        parse_joint_answer(json.dumps(answer), NWUCLA)


def test_unknown_joint_is_rejected() -> None:
    with pytest.raises(AnswerError, match="unknown joints 'tail'"):
        parse_joint_answer(json.dumps(_joints(tail="wags")), NWUCLA)


def test_duplicate_joint_key_is_rejected() -> None:
    raw = json.dumps(_joints())[:-1] + ', "head": "again"}'
    with pytest.raises(AnswerError, match="more than once 'head'"):
        parse_joint_answer(raw, NWUCLA)


def test_alias_and_name_of_the_same_joint_is_a_duplicate() -> None:
    with pytest.raises(AnswerError, match="more than once 'shoulder center'"):
        parse_joint_answer(json.dumps(_joints(neck="again")), NWUCLA)


def test_empty_joint_text_is_rejected() -> None:
    with pytest.raises(AnswerError, match="empty descriptions for 'head'"):
        parse_joint_answer(json.dumps(_joints(head="  ")), NWUCLA)


def test_joint_schema_requires_every_joint_and_nothing_else() -> None:
    schema = joint_json_schema(NWUCLA)
    assert schema["required"] == NWUCLA.joint_names
    assert list(schema["properties"]) == NWUCLA.joint_names
    assert schema["additionalProperties"] is False


def test_global_schema_offers_the_spec_joint_names() -> None:
    schema = global_json_schema(NWUCLA)
    allowed = schema["properties"]["key_body_parts"]["items"]["enum"]
    assert set(NWUCLA.joint_names) <= set(allowed)
    assert set(schema["required"]) == {"key_body_parts", "description"}


def test_joint_sentence_pattern_ties_each_sentence_to_its_joint() -> None:
    pattern = joint_json_schema(NWUCLA)["properties"]["left knee"]["pattern"]
    assert re.match(pattern, "The left knee bends to lower the body.")
    assert not re.match(pattern, "sit down")
    assert not re.match(pattern, "The right knee bends to lower the body.")


def test_repeated_key_body_parts_are_kept_once_in_order() -> None:
    raw = json.dumps({"key_body_parts": ["spine", "head", "spine"], "description": "Nod."})
    assert parse_global_answer(raw).key_body_parts == ["spine", "head"]
