"""The training step's fast path, shared by the train loop and ``bench/train_throughput.py``.

What makes it fast on a GPU (see ``docs/performance.md`` for the measurements):
- forward + loss go through ``torch.compile`` (Inductor fuses the BatchNorm/ReLU/add/softmax chains
  that dominate the memory traffic of these small-channel GCNs and picks conv layouts), under bf16
  autocast;
- ``auto`` (the default) adds CUDA graphs (``reduce-overhead``): the compiled step launches
  hundreds of kernels, and their launch cost, not the GPU, set the pace (H200, batch 64: 1,275 →
  3,177 samples/s). Under DDP the step is then compiled as one graph (``optimize_ddp`` off) so the
  graphs can capture it; the all-reduce of the ~2.7 M gradients runs after the backward instead of
  overlapping it (2 H200: 1.01× one GPU without CUDA graphs, 1.88× with them);
- the optimizer is ``SGD(fused=True)``: one kernel family for all parameters;
- nothing in the step reads a value back to the host (losses stay tensors).

On the CPU everything runs eagerly (tests, smoke runs); the numerics are the same function.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from trainer.models.losses import crossglg_loss

COMPILE_MODES = ("auto", "off", "default", "reduce-overhead", "max-autotune-no-cudagraphs")

ForwardLoss = Callable[
    [Tensor, Tensor | None, Tensor, Tensor | None], tuple[Tensor, dict[str, Tensor], Tensor]
]


def autocast_for(device: torch.device, precision: str) -> Any:
    """bf16/fp16 autocast context on CUDA; a no-op on the CPU or for ``fp32``."""
    if device.type != "cuda" or precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def uses_compile(compile_mode: str, device: torch.device) -> bool:
    """Whether the step is compiled: on CUDA unless the mode is ``off`` (CPU runs stay eager)."""
    return device.type == "cuda" and compile_mode != "off"


# Below this many training samples (epochs × samples per epoch) compiling does not pay for itself:
# each graph takes ~75–110 s to build on an H200 and the step then runs ~4,200 instead of ~1,100
# samples/s (docs/performance.md), so it breaks even near 160,000 samples. NW-UCLA's recipe
# (~1,000 × 50) stays eager; NTU's (95,001 × 110) compiles.
AUTO_COMPILE_MIN_SAMPLES = 200_000


def choose_compile_mode(compile_mode: str, total_samples: int) -> str:
    """The mode a run of ``total_samples`` training samples uses: ``auto`` → ``off`` for short runs."""
    if compile_mode == "auto" and total_samples < AUTO_COMPILE_MIN_SAMPLES:
        return "off"
    return compile_mode


def resolve_compile_mode(compile_mode: str) -> str:
    """``auto`` → ``reduce-overhead`` (Inductor + CUDA graphs); other modes as given."""
    return "reduce-overhead" if compile_mode == "auto" else compile_mode


# Inductor settings of the training step (forward + backward), on top of the compile mode's own;
# none today. Tried: Inductor's recompute thresholds raised (``remat`` in bench/train_throughput.py's
# INDUCTOR_FLAGS), so that each BatchNorm backward's fp32 input gradient is recomputed by its readers
# instead of stored: 10% fewer bytes per block by Inductor's count (bench/inductor_bytes.py) and
# 25.77 → 24.83 ms for the nine blocks alone, but the whole step did not gain (H100, batch 128:
# 4,722 with it, 4,743 without, same call, 2026-12-07; docs/performance.md, session 14).
TRAINING_INDUCTOR_OPTIONS: dict[str, Any] = {}


def compile_options(mode: str, inductor_options: dict[str, Any] | None) -> dict[str, Any]:
    """``torch.compile`` keyword arguments: ``mode`` alone, or its Inductor options merged with
    ``inductor_options`` (``torch.compile`` takes a mode or options, not both). Options this
    torch's Inductor does not know are left out."""
    if not inductor_options:
        return {"mode": None if mode == "default" else mode}
    import torch._inductor.config as inductor_config
    from torch._inductor import list_mode_options

    known = inductor_config.get_config_copy()
    extra = {k: v for k, v in inductor_options.items() if k in known}
    base = {} if mode == "default" else list_mode_options(mode)
    return {"options": {**base, **extra}}


def _compile(
    fn: Callable[..., Any],
    compile_mode: str,
    distributed: bool = False,
    inductor_options: dict[str, Any] | None = None,
) -> Callable[..., Any]:
    mode = resolve_compile_mode(compile_mode)
    if distributed and mode == "reduce-overhead":
        # Dynamo splits a DDP model's graph at the gradient buckets so the all-reduce can overlap
        # the backward; CUDA graphs need the step in one piece instead (measured: they pay far more).
        torch._dynamo.config.optimize_ddp = False
    return torch.compile(fn, **compile_options(mode, inductor_options))


def make_sgd(
    params: Any, lr: float, momentum: float, nesterov: bool, weight_decay: float, device: torch.device
) -> torch.optim.SGD:
    """SGD with the fused CUDA implementation on GPUs (same update rule, one launch per dtype group)."""
    return torch.optim.SGD(
        params,
        lr=lr,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        fused=True if device.type == "cuda" else None,
    )


def parameter_groups(model: nn.Module, lr: float, interaction_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """SGD parameter groups: CrossGLG's interaction module (``model.interaction``, if any) at
    ``lr · interaction_lr_scale``, everything else at ``lr``.

    Why (NW-UCLA, H200, 2026-11-22): at InfoGCN's lr 0.1 the attention/LayerNorm/MLP stack of the
    L2G branch diverged in every CrossGLG run once the warm-up reached lr ≈ 0.08–0.1 (text-branch
    loss 0.5 → 37 → NaN at steps 144–407, 10 of 10 runs, fp32 and bf16, fused and unfused attention)
    while the baseline trained; the text branch learns its task within ~30 steps at a fraction of the lr.
    """
    interaction = getattr(model, "interaction", None)
    if interaction is None or interaction_lr_scale == 1.0:
        return [{"params": list(model.parameters()), "lr": lr}]
    own = {id(p) for p in interaction.parameters()}
    rest = [p for p in model.parameters() if id(p) not in own]
    return [
        {"params": rest, "lr": lr},
        {"params": list(interaction.parameters()), "lr": lr * interaction_lr_scale},
    ]


def make_forward_loss(
    model: nn.Module,
    device: torch.device,
    compile_mode: str = "auto",
    distributed: bool = False,
    **loss_options: Any,
) -> ForwardLoss:
    """``f(x, text, labels, k_gt) -> (loss, parts, logits)``: the model's forward and ``crossglg_loss``.

    Compiled with ``torch.compile(mode=compile_mode)`` and :data:`TRAINING_INDUCTOR_OPTIONS` on CUDA
    (see :func:`uses_compile`), eager otherwise; ``distributed``: ``model`` is DDP-wrapped (see the
    module docstring). ``loss_options`` go to :func:`crossglg_loss` (label smoothing and weights).
    """

    def forward_loss(
        x: Tensor, text: Tensor | None, labels: Tensor, k_gt: Tensor | None
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        out = model(x, text_joint=text)
        loss, parts = crossglg_loss(out, labels, k_gt, **loss_options)
        logits = out["logits"]
        assert logits is not None
        return loss, parts, logits

    if not uses_compile(compile_mode, device):
        return forward_loss
    return _compile(forward_loss, compile_mode, distributed, TRAINING_INDUCTOR_OPTIONS)


def make_feature_extractor(
    model: nn.Module, device: torch.device, compile_mode: str = "auto"
) -> Callable[[Tensor], Tensor]:
    """Inference features ``[N, F]`` (``model.extract_features``), compiled like the training step.

    Under CUDA graphs the compiled output lives in the graph's memory and the next call overwrites
    it, so the features are returned as a copy (``[N, F]``: a few hundred bytes per sample).
    """
    extract = model.extract_features  # type: ignore[operator]
    if not uses_compile(compile_mode, device):
        return extract
    compiled = _compile(extract, compile_mode)
    if resolve_compile_mode(compile_mode) != "reduce-overhead":
        return compiled
    return lambda x: compiled(x).clone()


def train_step(
    forward_loss: ForwardLoss,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    autocast: Any,
    x: Tensor,
    text: Tensor | None,
    labels: Tensor,
    k_gt: Tensor | None,
) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """One optimizer step (forward, loss, backward, update); returns the loss, its parts and the logits."""
    with autocast:
        loss, parts, logits = forward_loss(x, text, labels, k_gt)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, parts, logits
