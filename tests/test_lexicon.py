"""The body-part lexicon: words → concepts → joints of both shipped specs (25 and 20 joints)."""

from __future__ import annotations

import pytest

from dataspec import load_spec
from kbgen.keyjoints.lexicon import LexiconError, load_lexicon

NTU = load_spec("ntu120")
UCLA = load_spec("nwucla")
LEX = load_lexicon()


def joints(spec, text: str) -> set[str]:
    """Names of all joints the body-part mentions in ``text`` cover."""
    return {spec.joints[j].name for hit in LEX.hits(spec, text) for j in hit.joints}


@pytest.mark.parametrize(
    ("word", "folded"),
    [
        ("arms", "arm"),
        ("feet", "foot"),
        ("teeth", "tooth"),
        ("hips", "hip"),
        ("man's", None),
        ("toes", "toe"),
    ],
)
def test_plurals_and_possessives_fold_to_lexicon_words(word: str, folded: str | None) -> None:
    assert LEX.fold(word) == folded


def test_plural_and_singular_give_the_same_joints() -> None:
    assert joints(NTU, "his feet") == joints(NTU, "the foot") == {"left foot", "right foot"}
    assert joints(NTU, "arms") == joints(NTU, "arm")


def test_sides_restrict_to_that_side() -> None:
    assert joints(NTU, "his left hand") == {"left hand", "tip of the left hand", "left thumb"}
    assert joints(NTU, "the right elbow") == {"right elbow"}
    assert joints(UCLA, "left knee") == {"left knee"}


@pytest.mark.parametrize("phrase", ["both hands", "either hand", "one hand", "two hands", "the hand"])
def test_both_either_one_and_unsided_hand_cover_both_hands(phrase: str) -> None:
    # Documented choice: a hand whose side the text does not give is both hands.
    assert joints(NTU, phrase) == {
        "left hand",
        "tip of the left hand",
        "left thumb",
        "right hand",
        "tip of the right hand",
        "right thumb",
    }


def test_dominant_hand_is_the_right_hand() -> None:
    assert joints(NTU, "his dominant hand") == {"right hand", "tip of the right hand", "right thumb"}
    assert joints(NTU, "the non-dominant arm") == {"left shoulder", "left elbow", "left wrist", "left hand"}


def test_groups_cover_their_members() -> None:
    assert joints(NTU, "the arm") == {
        "left shoulder",
        "left elbow",
        "left wrist",
        "left hand",
        "right shoulder",
        "right elbow",
        "right wrist",
        "right hand",
    }
    assert joints(NTU, "his torso") == {"base of the spine", "middle of the spine", "upper spine"}
    assert joints(NTU, "trunk") == joints(NTU, "torso")
    legs = joints(NTU, "his legs")
    assert {"left hip", "left knee", "left ankle", "right knee", "right foot"} <= legs
    assert not legs & {"left hand", "head"}
    upper = joints(NTU, "the upper body")
    assert {"head", "neck", "left shoulder", "right hand", "middle of the spine"} <= upper
    assert not upper & {"left knee", "right foot"}
    lower = joints(NTU, "the lower body")
    assert {"left knee", "right ankle", "left foot", "base of the spine"} <= lower
    assert not lower & {"head", "left hand"}


@pytest.mark.parametrize(
    ("phrase", "expected"),
    [
        ("his palm", {"left hand", "right hand"}),
        ("the fingers", {"tip of the left hand", "left thumb", "tip of the right hand", "right thumb"}),
        ("his left thumb", {"left thumb"}),
        ("the forearm", {"left elbow", "left wrist", "right elbow", "right wrist"}),
        ("his right thigh", {"right hip", "right knee"}),
        ("the shins", {"left knee", "left ankle", "right knee", "right ankle"}),
        ("the left heel", {"left ankle", "left foot"}),
        ("his toes", {"left foot", "right foot"}),
        ("his chin", {"head"}),
        ("the face", {"head"}),
        ("his neck", {"neck"}),
        ("the shoulder blades", {"left shoulder", "right shoulder", "upper spine"}),
    ],
)
def test_fine_words_on_ntu(phrase: str, expected: set[str]) -> None:
    assert joints(NTU, phrase) == expected


@pytest.mark.parametrize(
    ("phrase", "expected"),
    [
        # NW-UCLA has no finger or thumb joints: those words fall back to the hand joint.
        ("the fingers", {"left hand", "right hand"}),
        ("his right thumb", {"right hand"}),
        ("his neck", {"shoulder center"}),
        ("the shoulder blades", {"left shoulder", "right shoulder", "shoulder center"}),
        ("his left hand", {"left hand"}),
        ("the torso", {"hip center", "spine"}),
    ],
)
def test_fine_words_on_nwucla(phrase: str, expected: set[str]) -> None:
    assert joints(UCLA, phrase) == expected


@pytest.mark.parametrize("spec", [NTU, UCLA], ids=["ntu120-25-joints", "nwucla-20-joints"])
def test_every_concept_selects_joints_of_every_spec(spec) -> None:
    for concept in LEX.concepts:
        assert LEX.joints_for(spec, concept), f"concept {concept} selects nothing in {spec.name}"


def test_multiword_terms_win_over_their_last_word() -> None:
    hits = LEX.hits(NTU, "his lower back and upper arm")
    assert [h.concept for h in hits] == ["lower_back", "upper_arm"]


def test_words_that_are_not_body_parts_hit_nothing() -> None:
    assert LEX.hits(NTU, "a glass of water on the table") == []
    # "shoulder-width" is one hyphenated word, not a shoulder.
    assert LEX.hits(NTU, "shoulder-width apart") == []


def test_appearance_words_weigh_less_than_motion_words() -> None:
    (hair,) = LEX.hits(NTU, "his hair")
    (head,) = LEX.hits(NTU, "his head")
    assert hair.weight < head.weight == 1.0


def test_a_malformed_lexicon_is_refused_with_the_entry_named(tmp_path) -> None:
    bad = tmp_path / "lex.yaml"
    bad.write_text("concepts: {hand: {parts: [hand]}}\nterms: {palm: paw}\n")
    with pytest.raises(LexiconError, match="term 'palm' names unknown concept 'paw'"):
        load_lexicon(bad)


def test_lexicon_yaml_syntax_errors_are_one_line(tmp_path) -> None:
    bad = tmp_path / "lex.yaml"
    bad.write_text("concepts: [unclosed\n")
    with pytest.raises(LexiconError, match="not valid YAML"):
        load_lexicon(bad)
