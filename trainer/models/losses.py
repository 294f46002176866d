"""Training losses: InfoGCN's information-bottleneck terms and CrossGLG's total loss.

``L = L_s + w_calibrate · L_calibrate + w_c · L_c`` (paper: 0.5 and 0.2), where ``L_s`` is the
skeleton branch's label-smoothed cross-entropy plus the encoder's own terms (InfoGCN: ``w_mmd · MMD
+ w_zmean · ||mean z||``, official weights 0.1 and 1e-4), ``L_calibrate = Σ_v (k_out − k_gt[y])²``
(squared error summed over joints, mean over the batch; :func:`calibration_loss`) and
``L_c`` the cross-entropy of the text branch through the shared classifier. Every part is a tensor
(no ``.item()``), with static shapes, so the loss compiles and never syncs the GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def class_mean_mmd(z: Tensor, z_prior: Tensor, y: Tensor) -> Tensor:
    """InfoGCN's MMD term: MSE between the batch mean of ``z`` per present class and its prior row.

    Written with a one-hot matrix instead of a loop over classes: classes absent from the batch are
    masked out, as in the official per-class mean.
    """
    one_hot = F.one_hot(y, z_prior.shape[0]).to(z.dtype)  # [B, K]
    counts = one_hot.sum(dim=0)  # [K]
    class_mean = (one_hot.t() @ z) / counts.clamp(min=1.0)[:, None]
    present = (counts > 0).to(z.dtype)[:, None]
    sq = (class_mean - z_prior.to(z.dtype)) ** 2 * present
    return sq.sum() / (present.sum() * z.shape[1]).clamp(min=1.0)


CALIBRATION_LOSSES = ("sum", "mean", "kl")


def calibration_loss(k_out: Tensor, k_gt: Tensor, kind: str = "sum") -> Tensor:
    """``L_calibrate`` between predicted and LLM key-joint distributions ``[B, V]``.

    ``sum``: squared error summed over the joints, averaged over the batch (V × the element-wise
    MSE); ``mean``: the element-wise MSE (tiny: two distributions over 25 joints differ by ~1e-3 per
    entry); ``kl``: ``KL(k_gt || k_out)``.
    """
    if kind == "sum":
        return ((k_out - k_gt) ** 2).sum(dim=-1).mean()
    if kind == "mean":
        return F.mse_loss(k_out, k_gt)
    if kind == "kl":
        return F.kl_div(k_out.clamp_min(1e-8).log(), k_gt, reduction="batchmean")
    raise ValueError(f"unknown calibration loss '{kind}': use one of {', '.join(CALIBRATION_LOSSES)}")


def crossglg_loss(
    out: dict[str, Tensor | None],
    y: Tensor,
    k_gt_rows: Tensor | None,
    *,
    label_smoothing: float = 0.1,
    w_calibrate: float = 0.5,
    w_c: float = 0.2,
    w_mmd: float = 0.1,
    w_zmean: float = 1e-4,
    calibrate: str = "sum",
) -> tuple[Tensor, dict[str, Tensor]]:
    """Total CrossGLG loss and its parts.

    Args:
        out: the model's forward dict (``logits``; optional ``logits_text``, ``k_out``, ``z``, ``z_prior``).
        y: labels ``[B]`` in 0..K-1.
        k_gt_rows: the key-joint distributions of each sample's class ``[B, V]`` (``key_joints[y]``),
            or None when there is no knowledge pack (then no calibration term).
        label_smoothing: of both cross-entropies.
        w_calibrate, w_c: weights of ``L_calibrate`` and ``L_c``.
        w_mmd, w_zmean: weights of InfoGCN's MMD and mean-``z`` norm terms (ignored without ``z``).
        calibrate: the form of ``L_calibrate`` (``sum``, ``mean``, ``kl``; :func:`calibration_loss`),
            settable as ``loss.options.calibrate`` in a trainer config.

    Returns:
        ``(total, parts)`` with parts ``cls``, and where they apply ``mmd``, ``z_mean``,
        ``calibrate``, ``text_cls`` — all tensors.
    """
    logits = out["logits"]
    assert logits is not None
    parts: dict[str, Tensor] = {"cls": F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)}
    total = parts["cls"]
    z, z_prior = out.get("z"), out.get("z_prior")
    if z is not None and z_prior is not None:
        parts["mmd"] = class_mean_mmd(z.float(), z_prior, y)
        parts["z_mean"] = torch.linalg.vector_norm(z.float().mean(dim=0))
        total = total + w_mmd * parts["mmd"] + w_zmean * parts["z_mean"]
    k_out = out.get("k_out")
    if k_out is not None and k_gt_rows is not None:
        parts["calibrate"] = calibration_loss(k_out.float(), k_gt_rows.float(), calibrate)
        total = total + w_calibrate * parts["calibrate"]
    logits_text = out.get("logits_text")
    if logits_text is not None:
        parts["text_cls"] = F.cross_entropy(logits_text.float(), y, label_smoothing=label_smoothing)
        total = total + w_c * parts["text_cls"]
    return total, parts
