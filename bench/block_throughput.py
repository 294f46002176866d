"""InfoGCN's encoding blocks one at a time: GPU time of each block shape's training forward + backward.

The training step spends nearly all its time in the nine encoding blocks, and a full-model compare
(``bench/train_throughput.py --compare``) needs ~5 minutes of compilation per setting. This bench
compiles one block per distinct shape (input → output channels, stride, frames) and times its
forward + backward at a training batch, so a change to a block (a fused kernel, a model option) can
be judged per shape in a minute or two, and the step's time can be split into the blocks' share and
the rest (stem, head, losses, optimizer, feeder).

Each block runs as in the model: bf16 autocast, channels-last features ``[N·M, C, T, V]``,
batch statistics (training mode), ``torch.compile`` (Inductor, no CUDA graphs of its own); the
forward + backward is captured in a CUDA graph and replayed (``batchnorm_bandwidth.time_call``), so
the figure is GPU time. The JSON also holds each shape's *activation unit* (one bf16 tensor of the
block's output size) so a time can be read as units moved at the copy rate::

    python bench/block_throughput.py                               # today's defaults, batch 128
    python bench/block_throughput.py --compare fused_norm          # + the blocks with that option on
    python bench/block_throughput.py --compare remat               # + an Inductor setting (INDUCTOR_FLAGS)
    python bench/block_throughput.py --quick                       # tiny shapes on the CPU (script check)

Writes ``bench/results/block_throughput.json`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch._inductor.config as inductor_config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from batchnorm_bandwidth import time_call  # noqa: E402
from train_throughput import INDUCTOR_FLAGS  # noqa: E402

from trainer.models.infogcn import INFOGCN_CHANNELS, InfoGCNBlock  # noqa: E402
from trainer.plots import plot_grouped_bars  # noqa: E402

NUM_JOINTS = 25
PERSONS = 2
WINDOW = 64  # frames of a training clip (trainer.config's default window)


@dataclass(frozen=True)
class BlockShape:
    """One distinct encoding block of InfoGCN and how many of the nine blocks have it."""

    in_channels: int
    out_channels: int
    stride: int
    frames: int  # input frames
    count: int

    @property
    def label(self) -> str:
        return f"{self.in_channels}->{self.out_channels}/s{self.stride} T={self.frames}"


def block_shapes(window: int = WINDOW) -> list[BlockShape]:
    """The distinct blocks of :data:`INFOGCN_CHANNELS` in order, with their input frames and counts."""
    shapes: dict[tuple[int, int, int, int], int] = {}
    c_in, frames = 64, window
    for c_out, stride in INFOGCN_CHANNELS:
        key = (c_in, c_out, stride, frames)
        shapes[key] = shapes.get(key, 0) + 1
        c_in, frames = c_out, (frames + stride - 1) // stride
    return [BlockShape(*key, count) for key, count in shapes.items()]


def parse_options(items: list[str]) -> dict[str, bool]:
    """``name`` / ``name=false`` → block options (the switches :class:`InfoGCNBlock` takes); the
    names of ``train_throughput.INDUCTOR_FLAGS`` (e.g. ``remat``) stay as they are, for
    :func:`inductor_options`."""
    options = {}
    for item in items:
        if item in INDUCTOR_FLAGS:
            options[item] = True
            continue
        name, _, value = item.partition("=")
        if value.lower() not in ("", "1", "true", "0", "false"):
            raise SystemExit(f"bad option {item!r}: write NAME or NAME=true/false (e.g. fused_norm)")
        options[name] = value.lower() not in ("0", "false")
    return options


def inductor_options(options: dict[str, bool]) -> tuple[dict[str, bool], dict[str, object]]:
    """(block options, Inductor config) of one setting: its INDUCTOR_FLAGS names become config."""
    config = {k: v for name in options if name in INDUCTOR_FLAGS for k, v in INDUCTOR_FLAGS[name].items()}
    return {k: v for k, v in options.items() if k not in INDUCTOR_FLAGS}, config


def block_step(
    shape: BlockShape, batch: int, device: torch.device, options: dict[str, bool], compile_block: bool
) -> tuple[Callable[[], None], Callable[[], None], int]:
    """(forward, forward + backward, output elements) of one block at ``batch`` samples."""
    block = InfoGCNBlock(shape.in_channels, shape.out_channels, NUM_JOINTS, shape.stride, **options)
    block = block.to(device=device, memory_format=torch.channels_last).train()
    run = torch.compile(block) if compile_block else block
    x = torch.randn(batch * PERSONS, shape.in_channels, shape.frames, NUM_JOINTS, device=device)
    x = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last).requires_grad_()
    out_frames = (shape.frames + shape.stride - 1) // shape.stride
    grad = torch.randn(batch * PERSONS, shape.out_channels, out_frames, NUM_JOINTS, device=device)
    grad = grad.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)

    def forward() -> None:
        with autocast, torch.no_grad():
            run(x)

    def train() -> None:
        with autocast:
            out = run(x)
        out.backward(grad)

    return forward, train, grad.numel()


def bench_block(
    shape: BlockShape,
    batch: int,
    device: torch.device,
    options: dict[str, bool],
    iters: int,
    compile_block: bool,
) -> dict[str, object]:
    """Times of one block shape: forward (no autograd) and training forward + backward."""
    torch._dynamo.reset()
    t0 = time.perf_counter()
    options, config = inductor_options(options)
    with inductor_config.patch(config):  # compiles happen in the first calls
        forward, train, out_elements = block_step(shape, batch, device, options, compile_block)
        train_s = time_call(train, device, iters)
        forward_s = time_call(forward, device, iters)
    unit_mb = out_elements * 2 / 1e6  # one bf16 tensor of the block's output size
    return {
        **asdict(shape),
        "label": shape.label,
        "train_ms": round(1e3 * train_s, 4),
        "forward_ms": round(1e3 * forward_s, 4),
        "train_us_per_sample": round(1e6 * train_s / batch, 3),
        "unit_mb": round(unit_mb, 2),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def summarise(rows: list[dict], batch: int, copy_tb_s: float) -> dict[str, float]:
    """The nine blocks' training time per step and per sample, and the units at the copy rate."""
    train_ms = sum(r["train_ms"] * r["count"] for r in rows)
    forward_ms = sum(r["forward_ms"] * r["count"] for r in rows)
    # activation units the blocks' time would move at the copy rate (per block, averaged)
    units = sum(r["train_ms"] * 1e-3 * copy_tb_s * 1e12 / (r["unit_mb"] * 1e6) * r["count"] for r in rows)
    return {
        "blocks_train_ms_per_step": round(train_ms, 3),
        "blocks_forward_ms_per_step": round(forward_ms, 3),
        "blocks_train_us_per_sample": round(1e3 * train_ms / batch, 2),
        "blocks_samples_per_s_bound": round(batch / (train_ms * 1e-3)),
        "units_per_block_at_copy_rate": round(units / sum(r["count"] for r in rows), 1),
    }


def plot_blocks(result: dict, path: Path) -> Path | None:
    """Grouped bars: each block shape's training ms per step (its calls × count) per setting, with
    the nine blocks' total in each setting's label (None without matplotlib)."""
    settings = result["settings"]
    labels = [b["label"] + f" (×{b['count']})" for b in next(iter(settings.values()))["blocks"]]
    series = {
        f"{name}: {s['blocks_train_ms_per_step']:.2f} ms": [b["train_ms"] * b["count"] for b in s["blocks"]]
        for name, s in settings.items()
    }
    title = f"{result['gpu']}, batch {result['batch']}: the nine blocks per setting"
    return plot_grouped_bars(labels, series, "ms per training step (fwd + bwd)", title, path)


def replot_saved(out: Path, plot: Callable[[dict, Path], Path | None]) -> None:
    """A bench's ``--replot``: draw its saved result ``out`` as ``out``'s .png with ``plot``."""
    if not out.is_file():
        raise SystemExit(f"no result at {out}: run the bench first or pass --out")
    picture = plot(json.loads(out.read_text()), out.with_suffix(".png"))
    print(f"wrote {picture}" if picture else "matplotlib is not installed: no picture")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--iters", type=int, default=10, help="calls per timed CUDA graph")
    parser.add_argument("--options", nargs="*", default=[], help="block options of the base setting")
    parser.add_argument(
        "--compare", nargs="*", default=[], help="settings to time beside the base one, e.g. fused_norm"
    )
    parser.add_argument("--copy-tb-s", type=float, default=3.01, help="the device's copy rate (H100: 3.01)")
    parser.add_argument("--no-compile", action="store_true", help="eager blocks")
    parser.add_argument("--quick", action="store_true", help="batch 2, eager, on the CPU: checks the script")
    default_out = Path(__file__).parent / "results" / "block_throughput.json"
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--replot", action="store_true", help="only draw --out's saved result as its .png")
    args = parser.parse_args()
    if args.replot:
        replot_saved(args.out, plot_blocks)
        return
    device = torch.device(args.device)
    if args.quick:
        args.batch, args.iters, args.no_compile = 2, 1, True
    base = parse_options(args.options)
    settings = {"default" if not args.options else " ".join(args.options): base}
    for item in args.compare:
        settings[item] = {**base, **parse_options(item.split("+"))}
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the trainer runs (trainer/engine/loop.py)
    shapes = block_shapes(16 if args.quick else WINDOW)
    result: dict[str, object] = {
        "gpu": gpu,
        "torch": torch.__version__,
        "batch": args.batch,
        "copy_tb_s": args.copy_tb_s,
        "compiled": not args.no_compile,
        "settings": {},
    }
    for name, options in settings.items():
        rows = []
        for shape in shapes:
            row = bench_block(shape, args.batch, device, options, args.iters, not args.no_compile)
            rows.append(row)
            print(json.dumps({"setting": name, **row}), flush=True)
        result["settings"][name] = {
            "options": options,
            "blocks": rows,
            **summarise(rows, args.batch, args.copy_tb_s),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{gpu}, bf16 autocast, batch {args.batch}: ms per block call (training forward + backward)")
    names = list(result["settings"])
    print("| block | count | " + " | ".join(names) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in names) + " |")
    for i, shape in enumerate(shapes):
        cells = [str(result["settings"][n]["blocks"][i]["train_ms"]) for n in names]
        print(f"| {shape.label} | {shape.count} | " + " | ".join(cells) + " |")
    for key in ("blocks_train_ms_per_step", "blocks_samples_per_s_bound", "units_per_block_at_copy_rate"):
        print(f"| {key} | | " + " | ".join(str(result["settings"][n][key]) for n in names) + " |")
    picture = plot_blocks(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out}" + (f" and {picture}" if picture else ""))


if __name__ == "__main__":
    main()
