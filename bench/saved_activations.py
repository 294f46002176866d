"""What a CrossGLG training step keeps for its backward: the activations AOTAutograd saves, by dtype.

Every saved activation is written once in the forward and read at least once in the backward, so in
this bandwidth-bound step its bytes are a floor of the traffic it costs. This bench traces the real
training step (model + loss) through ``torch.compile`` with Inductor's decompositions and
AOTAutograd's min-cut partitioner — the partition Inductor gets — and sums the forward graph's saved
outputs by dtype, in activation units (one unit = the bf16 features of the first blocks,
``N·M × 64 × 64 × 25`` elements: ~52 MB at batch 128), listing the largest. It also sums the
forward graph's activation-sized intermediates by dtype (before fusion: where fp32 runs; Inductor's
decompositions run every BatchNorm in fp32 there), and the training rate those saved bytes alone
allow at ``--copy-tb-s`` (written once and read once per sample).

On the CPU it runs under bf16 autocast with the Triton ops through Triton's interpreter (so the
attention path is the GPU's custom op), and with ``layer_norm`` in fp32 as CUDA's autocast runs it
(CPU autocast keeps it in bf16). No GPU needed::

    python bench/saved_activations.py                                   # the default model
    python bench/saved_activations.py --options norm_in_input_dtype=false stem_in_compute_dtype=false

Writes ``bench/results/saved_activations.json`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # the script only: an import (a test of its helpers) leaves the environment alone
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernels are defined (CPU runs)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dataspec import load_spec  # noqa: E402
from trainer.config import parse_override  # noqa: E402
from trainer.models.crossglg import CrossGLG  # noqa: E402
from trainer.models.losses import crossglg_loss  # noqa: E402


def cuda_layer_norm_forward(self: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """``nn.LayerNorm.forward`` as CUDA's autocast runs it: in fp32 on an fp32 copy of the input (CPU
    autocast keeps bf16). Under CPU autocast only; plain otherwise."""
    if not torch.is_autocast_enabled("cpu"):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
    with torch.autocast("cpu", enabled=False):
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps)


def parse_options(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs (values read as YAML, as ``--set`` reads them) → encoder options."""
    return {".".join(keys): value for keys, value in map(parse_override, items)}


def saved_activations(
    batch: int,
    options: dict[str, Any],
    device: torch.device,
    frames: int = 64,
    inductor_decompositions: bool = True,
) -> dict[str, Any]:
    """Trace one training step (clips of ``frames``) and summarise its saved activations and fp32
    intermediates. ``inductor_decompositions``: partition the graph Inductor partitions (its
    decomposition table applied first, as ``torch.compile`` does; BatchNorm, LayerNorm and the ReLU
    backward become primitive ops the partitioner can recompute), else the undecomposed ATen graph."""
    from functorch.compile import make_boxed_func
    from torch._functorch.aot_autograd import aot_module_simplified
    from torch._functorch.partitioners import min_cut_rematerialization_partition
    from torch._inductor.decomposition import select_decomp_table

    graphs: dict[str, torch.fx.GraphModule] = {}

    def keep(name: str):  # noqa: ANN202
        def compiler(gm: torch.fx.GraphModule, _inputs: Any) -> Any:
            graphs[name] = gm
            return make_boxed_func(gm.forward)

        return compiler

    def backend(gm: torch.fx.GraphModule, inputs: Any) -> Any:
        return aot_module_simplified(
            gm,
            inputs,
            fw_compiler=keep("forward"),
            bw_compiler=keep("backward"),
            partition_fn=min_cut_rematerialization_partition,
            decompositions=select_decomp_table() if inductor_decompositions else None,
        )

    spec = load_spec("ntu120")
    torch.manual_seed(0)
    model = CrossGLG("infogcn", 100, spec, **options).to(device).train()
    x = torch.randn(batch, 3, frames, spec.num_joints, 2, device=device)
    text = torch.randn(batch, spec.num_joints, 384, device=device, dtype=torch.float16)
    labels = torch.randint(0, 100, (batch,), device=device)
    k_gt = torch.softmax(torch.randn(batch, spec.num_joints, device=device), -1)

    def step(x: torch.Tensor, text: torch.Tensor, labels: torch.Tensor, k_gt: torch.Tensor) -> torch.Tensor:
        return crossglg_loss(model(x, text_joint=text), labels, k_gt)[0]

    torch._dynamo.reset()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        loss = torch.compile(step, backend=backend)(x, text, labels, k_gt)
    loss.backward()

    width = options.get("base_channels", 64)
    unit = batch * 2 * frames * width * spec.num_joints * 2  # bytes of the first blocks' bf16 features
    outputs = list(graphs["forward"].graph.nodes)[-1].args[0]
    saved = [n.meta["val"] for n in outputs if isinstance(n.meta.get("val"), torch.Tensor)]
    by_dtype: collections.Counter[str] = collections.Counter()
    largest = []
    for value in saved:
        size = value.numel() * value.element_size()
        by_dtype[str(value.dtype).removeprefix("torch.")] += size / unit
        if size >= unit / 8:
            largest.append(
                {"units": round(size / unit, 2), "dtype": str(value.dtype), "shape": list(value.shape)}
            )
    intermediates: collections.Counter[str] = collections.Counter()
    for node in graphs["forward"].graph.nodes:
        value = node.meta.get("val")
        if node.op == "call_function" and isinstance(value, torch.Tensor) and value.numel() * 2 >= unit / 8:
            intermediates[str(value.dtype).removeprefix("torch.")] += (
                value.numel() * value.element_size() / unit
            )
    largest.sort(key=lambda r: -r["units"])
    return {
        "batch": batch,
        "frames": frames,
        "options": options,
        "inductor_decompositions": inductor_decompositions,
        "unit_bytes": unit,
        "saved_tensors": len(saved),
        "saved_units_by_dtype": {k: round(v, 2) for k, v in sorted(by_dtype.items())},
        "saved_units_total": round(sum(by_dtype.values()), 2),
        "forward_intermediate_units_by_dtype": {k: round(v, 2) for k, v in sorted(intermediates.items())},
        "largest_saved": largest[:40],
    }


def traffic_floor(result: dict[str, Any], copy_tb_s: float) -> dict[str, float]:
    """What the saved activations alone cost per training sample at ``copy_tb_s`` (TB/s): each is
    written in the forward and read in the backward, so no schedule that saves them moves fewer bytes.

    Returns the saved MB per sample, the µs per sample for writing and reading them once at the copy
    rate, and the samples/s that time allows (an upper bound on the training rate from these bytes
    alone: the gradients, the forward's other traffic and the FLOPs come on top).
    """
    saved_bytes = result["saved_units_total"] * result["unit_bytes"] / result["batch"]
    us = 2 * saved_bytes / (copy_tb_s * 1e12) * 1e6
    return {
        "copy_tb_s": copy_tb_s,
        "saved_mb_per_sample": round(saved_bytes / 1e6, 2),
        "write_and_read_us_per_sample": round(us, 2),
        "samples_per_s_bound": round(1e6 / us),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--options", nargs="*", default=[], help="encoder options, key=value (YAML values)")
    parser.add_argument("--quick", action="store_true", help="16 channels, 16 frames (checks the script)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "saved_activations.json"
    )
    parser.add_argument(
        "--copy-tb-s",
        type=float,
        default=3.01,
        help="device copy rate for the traffic floor (TB/s; measured: H100 3.01, H200 4.23)",
    )
    parser.add_argument(
        "--aten-graph",
        action="store_true",
        help="partition the undecomposed ATen graph (before 2026-12-07: counted more than Inductor saves)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.nn.LayerNorm.forward = cuda_layer_norm_forward  # type: ignore[method-assign]
    options = parse_options(args.options)
    if args.quick:
        options.setdefault("base_channels", 16)
    frames = 16 if args.quick else 64
    result = saved_activations(
        args.batch, options, device, frames, inductor_decompositions=not args.aten_graph
    )
    result["traffic_floor"] = floor = traffic_floor(result, args.copy_tb_s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for row in result["largest_saved"][:12]:
        print(f"  {row['units']:5.2f} units {row['dtype']:15s} {row['shape']}")
    options = result["options"] or "default"
    print(f"options {options}, batch {args.batch}: {result['saved_tensors']} saved tensors")
    total = result["saved_units_total"]
    print(f"saved for the backward (activation units): {result['saved_units_by_dtype']}, total {total}")
    print(f"forward intermediates (units, before fusion): {result['forward_intermediate_units_by_dtype']}")
    print(
        f"per sample: {floor['saved_mb_per_sample']} MB saved; written and read once at "
        f"{args.copy_tb_s} TB/s: {floor['write_and_read_us_per_sample']} µs, so at most "
        f"{floor['samples_per_s_bound']:,} samples/s from these bytes alone"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
