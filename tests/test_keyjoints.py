"""k_gt from a global description: noun phrases (spaCy; stanza when present), negation, weighting, plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from dataspec import load_spec
from kbgen.keyjoints.distribution import compute_keyjoints, top_joints
from kbgen.keyjoints.lexicon import load_lexicon
from kbgen.keyjoints.negation import clauses, negated_at
from kbgen.keyjoints.phrases import (
    BackendUnavailable,
    NounPhrase,
    StanzaExtractor,
    _base_np_leaf_spans,
    get_extractor,
    stanza_models_present,
)
from kbgen.keyjoints.plot import Panel, neutral_pose, plot_keyjoints

NTU = load_spec("ntu120")
UCLA = load_spec("nwucla")
LEX = load_lexicon()


def _backends() -> list:
    params = [pytest.param("spacy", id="spacy")]
    marks = pytest.mark.skipif(not stanza_models_present(), reason="stanza English models not present")
    params.append(pytest.param("stanza", id="stanza", marks=marks))
    return params


@pytest.fixture(scope="module", params=_backends())
def extractor(request):
    return get_extractor(request.param)


def weights_by_joint(spec, text, extractor, parts=None, **kw) -> dict[str, float]:
    return compute_keyjoints(spec, text, parts, extractor, **kw).by_joint(spec)


def part_mass(spec, weights: dict[str, float], part: str) -> float:
    return sum(weights[j.name] for j in spec.joints if j.part == part)


# ----------------------------------------------------------------------------- noun phrases


def test_extractors_return_spans_into_the_text(extractor) -> None:
    text = "The man raises his left arm. Then he kicks the ball with his right foot."
    phrases = extractor.extract(text)
    assert all(text[p.start : p.end] == p.text for p in phrases)
    assert {"his left arm", "his right foot"} <= {p.text for p in phrases}
    assert extractor.version.startswith(extractor.name)


def test_stanza_refuses_to_run_without_models_and_never_downloads(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="not in .*use --backend spacy"):
        StanzaExtractor(tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing fetched into the folder


def test_stanza_with_unusable_models_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "resources.json").write_text("{}")
    for proc in ("tokenize", "pos", "constituency"):
        folder = tmp_path / "en" / proc
        folder.mkdir(parents=True)
        (folder / "default.pt").write_bytes(b"not a model")
    assert stanza_models_present(tmp_path)
    with pytest.raises(BackendUnavailable, match="cannot load its English models .* use --backend spacy"):
        StanzaExtractor(tmp_path)


@dataclass
class _Node:
    label: str
    children: list


def _leaf(word: str) -> _Node:
    return _Node(word, [])


def test_base_nps_of_a_constituency_tree_are_the_lowest_np_nodes() -> None:
    # (S (NP (NP his hand) (PP on (NP the table))) (VP rests))
    tree = _Node(
        "S",
        [
            _Node(
                "NP",
                [
                    _Node("NP", [_Node("PRP$", [_leaf("his")]), _Node("NN", [_leaf("hand")])]),
                    _Node("PP", [_Node("IN", [_leaf("on")]), _Node("NP", [_leaf("the"), _leaf("table")])]),
                ],
            ),
            _Node("VP", [_Node("VBZ", [_leaf("rests")])]),
        ],
    )
    assert _base_np_leaf_spans(tree) == [(0, 1), (3, 4)]


@dataclass
class _Word:
    text: str
    start_char: int
    end_char: int


@dataclass
class _Sentence:
    words: list
    constituency: object


class _FakeStanzaPipeline:
    """Unit-test fake of a stanza pipeline: whitespace words, every word pair after 'the' is an NP."""

    def __call__(self, text: str):
        words, pos = [], 0
        for token in text.split():
            start = text.index(token, pos)
            pos = start + len(token)
            words.append(_Word(token, start, pos))
        leaves = [_Node("X", [_leaf(w.text)]) for w in words]
        children, i = [], 0
        while i < len(leaves):
            if words[i].text.lower() == "the" and i + 1 < len(leaves):
                children.append(_Node("NP", leaves[i : i + 2]))
                i += 2
            else:
                children.append(leaves[i])
                i += 1
        return type("Doc", (), {"sentences": [_Sentence(words, _Node("ROOT", children))]})()


def test_stanza_extract_maps_np_leaves_to_character_spans() -> None:
    extractor = object.__new__(StanzaExtractor)  # skip model loading: the pipeline is faked
    extractor._nlp = _FakeStanzaPipeline()
    text = "He  lifts the cup with the  hand."
    phrases = extractor.extract(text)
    assert [(p.text, p.start) for p in phrases] == [("the cup", 10), ("the  hand.", 23)]
    assert all(text[p.start : p.end] == p.text for p in phrases)


# ----------------------------------------------------------------------------- negation


@pytest.mark.parametrize(
    ("text", "word", "negated"),
    [
        ("The hips remain stationary.", "hips", True),
        ("His legs stay still while he waves.", "legs", True),
        ("He waves without moving the feet.", "feet", True),
        ("He waves without moving the feet.", "waves", False),
        ("The head, arms and legs remain still.", "arms", True),
        ("His legs are still bent at the knees.", "legs", False),
        ("The hip doesn't move; the hand waves.", "hand", False),
        ("The hip doesn't move; the hand waves.", "hip", True),
        ("His hips are neither turned nor twisted.", "hips", True),
        ("He kicks with his right foot without moving the hips or the shoulders.", "shoulders", True),
        ("He kicks with his right foot without moving the hips or the shoulders.", "foot", False),
        ("His arms are at his sides for balance.", "arms", True),
        ("The hip stays in place.", "hip", True),
        ("The hand holds the book in place.", "hand", False),
        ("His feet are flat on the floor.", "feet", True),
        ("The foot comes down flat on the floor.", "foot", False),
    ],
)
def test_clause_negation(text: str, word: str, negated: bool) -> None:
    assert negated_at(clauses(text, LEX), text.index(word)) is negated


def test_negated_parts_are_not_key(extractor) -> None:
    w = weights_by_joint(
        NTU, "He raises his hand. His hips remain stationary and his legs stay still.", extractor
    )
    assert part_mass(NTU, w, "hand") > 0.9
    assert w["left hip"] == w["right hip"] == w["left knee"] == 0.0


def test_without_moving_the_feet_keeps_the_feet_out(extractor) -> None:
    w = weights_by_joint(NTU, "He kicks the ball with his right leg without moving the feet.", extractor)
    assert w["right knee"] > 0 and w["left knee"] == 0
    assert w["left foot"] == 0
    # The right foot is covered by "right leg" only (leg includes the foot), not by the negated "feet".
    assert w["right foot"] == pytest.approx(w["right knee"])


# ----------------------------------------------------------------------------- weighting


def test_rows_sum_to_one_and_are_non_negative(extractor) -> None:
    for spec in (NTU, UCLA):
        for smoothing in (0.0, 0.1):
            result = compute_keyjoints(
                spec,
                "He lifts the cup with his right hand and tilts his head back.",
                ["arm"],
                extractor,
                smoothing=smoothing,
            )
            assert len(result.weights) == spec.num_joints
            assert sum(result.weights) == pytest.approx(1.0)
            assert min(result.weights) >= (smoothing / spec.num_joints) - 1e-12


def test_nothing_mapped_gives_a_flagged_uniform_row(extractor) -> None:
    result = compute_keyjoints(NTU, "A glass of water stands on the table.", [], extractor)
    assert result.is_uniform
    assert result.weights == pytest.approx([1 / 25] * 25)


def test_mass_follows_mention_counts(extractor) -> None:
    text = (
        "He grips the bat with his hands, swings his hands forward and then lowers his hands. His head turns."
    )
    w = weights_by_joint(NTU, text, extractor)
    assert w["left hand"] == pytest.approx(3 * w["head"])
    assert top_joints(NTU, list(w.values()), 1)[0][0] in {"left hand", "right hand"}


def test_key_body_parts_add_their_weight(extractor) -> None:
    without = weights_by_joint(NTU, "He raises his head.", extractor, [])
    with_parts = weights_by_joint(NTU, "He raises his head.", extractor, ["left foot"])
    assert without["left foot"] == 0
    assert with_parts["left foot"] == pytest.approx(with_parts["head"])
    heavier = weights_by_joint(NTU, "He raises his head.", extractor, ["left foot"], key_part_weight=2.0)
    assert heavier["left foot"] == pytest.approx(2 * heavier["head"])


def test_smoothing_mixes_with_uniform(extractor) -> None:
    plain = compute_keyjoints(NTU, "He raises his right elbow.", [], extractor).weights
    smooth = compute_keyjoints(NTU, "He raises his right elbow.", [], extractor, smoothing=0.2).weights
    assert smooth == pytest.approx([0.8 * p + 0.2 / 25 for p in plain])


def test_phrases_record_joints_and_negation(extractor) -> None:
    result = compute_keyjoints(NTU, "He nods his head. His feet remain planted.", ["hand"], extractor)
    records = {p.phrase: p for p in result.phrases}
    assert records["his head"].joints == ["neck", "head"] and not records["his head"].negated
    assert records["His feet"].negated and records["His feet"].weight == 0
    assert records["hand"].source == "key_body_parts"
    assert result.backend == extractor.name and result.lexicon_sha256 == LEX.sha256


def test_same_text_works_on_both_specs(extractor) -> None:
    text = "He snaps his fingers and taps his left heel."
    ntu = weights_by_joint(NTU, text, extractor)
    ucla = weights_by_joint(UCLA, text, extractor)
    assert ntu["left thumb"] > 0 and ntu["left ankle"] > 0
    assert ucla["left hand"] > 0 and ucla["left ankle"] > 0 and "left thumb" not in ucla


class _FakeExtractor:
    """Unit-test fake: every text is one noun phrase."""

    name = "fake"
    version = "fake 0"

    def extract(self, text: str) -> list[NounPhrase]:
        return [NounPhrase(text, 0, len(text))]


def test_smoothing_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        compute_keyjoints(NTU, "his hand", [], _FakeExtractor(), smoothing=1.5)


# ----------------------------------------------------------------------------- plot


@pytest.mark.parametrize("spec", [NTU, UCLA], ids=["ntu120", "nwucla"])
def test_neutral_pose_is_an_upright_front_view(spec) -> None:
    pos = neutral_pose(spec)
    name = {j.name: j.index for j in spec.joints}
    assert pos[name["head"], 1] > pos[name["left shoulder"], 1] > pos[name["left knee"], 1]
    assert pos[name["left foot"], 1] < pos[name["left knee"], 1]
    # Facing the viewer: the person's left is on the right of the picture.
    assert pos[name["left hand"], 0] > 0 > pos[name["right hand"], 0]
    assert len({tuple(p) for p in pos.round(3)}) == spec.num_joints  # no two joints on one spot


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_writes_a_grid_image(tmp_path: Path, suffix: str) -> None:
    panels = [Panel(f"class {i}", [float(j == i) for j in range(NTU.num_joints)]) for i in range(5)]
    out = plot_keyjoints(NTU, panels, tmp_path / f"k{suffix}", columns=3)
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in data[:2000]
    assert out.stat().st_size > 5_000
