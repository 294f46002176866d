"""Cosine nearest-neighbour classification against one exemplar per novel class."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_nearest_neighbour(
    support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor
) -> torch.Tensor:
    """Label of each query = label of the support feature with the highest cosine similarity.

    Args:
        support: ``[N, F]`` exemplar features.
        support_labels: ``[N]`` their labels.
        queries: ``[Q, F]`` query features.
    Returns:
        ``[Q]`` predicted labels (same dtype and device as ``support_labels``).
    """
    sim = F.normalize(queries.float(), dim=1) @ F.normalize(support.float(), dim=1).T
    return support_labels[sim.argmax(dim=1)]
