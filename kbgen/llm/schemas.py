"""The two answers kbgen asks for, validated with Pydantic, and the JSON schemas sent to the LLM.

- Global answer: ``{"description": "...", "key_body_parts": [...]}``.
- Joint answer: one JSON object whose keys are the spec's joint names, each mapped to one sentence.
  We chose an object keyed by joint name over a list of ``{joint, description}`` items: with
  constrained decoding the schema then fixes every key in order, so even a 135M model cannot skip,
  repeat or invent a joint, and real LLMs fill it reliably. The validator also accepts the list
  form (and aliases of joint names), so answers from prompted-JSON endpoints are not wasted.

Every rejection raises :class:`AnswerError` with one line that is both shown to users and sent
back to the LLM when kbgen asks again.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from dataspec import DatasetSpec, SpecError

# Generation bounds for the schema sent to the model: they stop a small model that loops, and
# are generous for a real one. Validation itself does not cap lengths.
MAX_KEY_PARTS = 6
MAX_KEY_PART_CHARS = 40
MAX_DESCRIPTION_CHARS = 700
MAX_JOINT_TEXT_CHARS = 240

# Body-part words allowed in key_body_parts besides the spec's joint names.
GENERIC_BODY_PARTS = (
    "whole body",
    "head",
    "torso",
    "spine",
    "shoulders",
    "arms",
    "elbows",
    "wrists",
    "hands",
    "fingers",
    "hips",
    "legs",
    "knees",
    "ankles",
    "feet",
)

NonEmptyText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class AnswerError(ValueError):
    """An LLM answer is not valid JSON or does not match the expected answer."""


class GlobalAnswer(BaseModel):
    """Answer to the global action prompt."""

    model_config = ConfigDict(extra="forbid")

    key_body_parts: list[NonEmptyText] = Field(min_length=1)
    description: NonEmptyText

    @field_validator("key_body_parts")
    @classmethod
    def _dedupe(cls, parts: list[str]) -> list[str]:
        # Small models repeat items ("spine", "spine", ...): keep the first of each, in order.
        return list(dict.fromkeys(parts))


class JointAnswer(BaseModel):
    """Answer to the joint motion prompt: exactly one non-empty text per joint of the spec.

    Validate with ``JointAnswer.model_validate(data, context={"spec": spec})``; ``joints`` then maps
    the spec's canonical joint names, in spec order, to their texts.
    """

    joints: dict[str, str]

    @model_validator(mode="before")
    @classmethod
    def _normalise(cls, data: Any, info: Any) -> dict[str, dict[str, str]]:
        spec = (info.context or {}).get("spec")
        if not isinstance(spec, DatasetSpec):
            raise ValueError("JointAnswer needs the dataset spec: validate with context={'spec': spec}")
        pairs = _joint_pairs(data)
        texts: dict[int, str] = {}
        unknown: list[str] = []
        duplicate: list[str] = []
        empty: list[str] = []
        for name, text in pairs:
            try:
                index = spec.joint_index(name)
            except SpecError:
                unknown.append(name)
                continue
            canonical = spec.joints[index].name
            if index in texts:
                duplicate.append(canonical)
                continue
            if not isinstance(text, str) or not text.strip():
                empty.append(canonical)
                texts[index] = ""
                continue
            texts[index] = text.strip()
        missing = [j.name for j in spec.joints if j.index not in texts]
        problems = []
        if unknown:
            problems.append(f"unknown joints {_quoted(unknown)}")
        if duplicate:
            problems.append(f"joints given more than once {_quoted(duplicate)}")
        if empty:
            problems.append(f"empty descriptions for {_quoted(empty)}")
        if missing:
            problems.append(f"missing joints {_quoted(missing)}")
        if problems:
            raise ValueError(
                "; ".join(problems) + f". Give exactly one sentence for each of the {spec.num_joints} joints"
            )
        return {"joints": {spec.joints[i].name: texts[i] for i in sorted(texts)}}


def _joint_pairs(data: Any) -> list[tuple[str, Any]]:
    """(joint name, text) pairs from either accepted shape, keeping duplicates visible."""
    if isinstance(data, dict) and set(data) == {"joints"}:
        data = data["joints"]
    if isinstance(data, _Pairs):
        return list(data.pairs)
    if isinstance(data, dict):
        return list(data.items())
    if isinstance(data, list):
        pairs = []
        for item in data:
            if not isinstance(item, dict) or "joint" not in item:
                raise ValueError('each list item must be an object {"joint": NAME, "description": TEXT}')
            pairs.append((str(item["joint"]), item.get("description")))
        return pairs
    raise ValueError("expected a JSON object mapping each joint name to its description")


class _Pairs(dict):
    """A JSON object that remembers every key/value pair, so repeated keys can be reported."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def load_json_answer(raw: str) -> Any:
    """Parse the JSON of an answer; tolerates a Markdown code fence around it (prompted-JSON mode)."""
    text = raw or ""
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        return json.loads(text, object_pairs_hook=_Pairs)
    except json.JSONDecodeError as exc:
        raise AnswerError(f"the answer is not valid JSON ({exc.msg} at character {exc.pos})") from None


def parse_global_answer(raw: str) -> GlobalAnswer:
    """Validate the raw text of a global answer."""
    data = load_json_answer(raw)
    if isinstance(data, _Pairs) and len(data.pairs) != len(data):
        raise AnswerError("the answer repeats a key: give key_body_parts and description once each")
    try:
        return GlobalAnswer.model_validate(data)
    except ValidationError as exc:
        raise AnswerError(_one_line(exc)) from None


def parse_joint_answer(raw: str, spec: DatasetSpec) -> JointAnswer:
    """Validate the raw text of a joint answer against the spec's joints (names and aliases)."""
    data = load_json_answer(raw)
    try:
        return JointAnswer.model_validate(data, context={"spec": spec})
    except ValidationError as exc:
        raise AnswerError(_one_line(exc)) from None


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def _quoted(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def global_json_schema(spec: DatasetSpec) -> dict[str, Any]:
    """JSON schema of the global answer, sent as ``response_format``.

    key_body_parts items are restricted to the spec's joint names and common body-part words: it
    keeps small models on the body (they otherwise list organs) and feeds key-joint mapping.
    """
    allowed = list(dict.fromkeys([*spec.joint_names, *GENERIC_BODY_PARTS]))
    return {
        "type": "object",
        # Description first: with constrained decoding the model writes keys in schema order, and
        # the key parts come out better when the model has just described the movement.
        "properties": {
            "description": {"type": "string", "minLength": 1, "maxLength": MAX_DESCRIPTION_CHARS},
            "key_body_parts": {
                "type": "array",
                "items": {"type": "string", "enum": allowed, "maxLength": MAX_KEY_PART_CHARS},
                "minItems": 1,
                "maxItems": MAX_KEY_PARTS,
            },
        },
        "required": ["description", "key_body_parts"],
        "additionalProperties": False,
    }


def joint_sentence_pattern(joint_name: str) -> str:
    """Regex each joint's sentence must match in generation: it starts with "The <joint name> ".

    Without it, small models write the action's name for every joint; with it, each sentence is
    about its joint. Validation does not require it (answers from prompted-JSON endpoints and
    imports may be worded otherwise). Spaces stay unescaped: llguidance refuses ``\\ ``.
    """
    name = re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", joint_name)
    return f'^The {name} [a-z][^"\\\\]{{10,{MAX_JOINT_TEXT_CHARS - len(joint_name) - 6}}}$'


def joint_json_schema(spec: DatasetSpec) -> dict[str, Any]:
    """JSON schema of the joint answer: an object with one required sentence per joint, in spec order."""
    return {
        "type": "object",
        "properties": {
            name: {"type": "string", "pattern": joint_sentence_pattern(name)} for name in spec.joint_names
        },
        "required": list(spec.joint_names),
        "additionalProperties": False,
    }
