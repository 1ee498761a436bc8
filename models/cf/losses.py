"""CF training losses over final (propagated) embeddings, each with an L2 term on layer-0 embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def l2_term(batch: int, *initial: torch.Tensor) -> torch.Tensor:
    """Half the summed squared norm of the given layer-0 rows, per example of the batch."""
    return torch.stack([rows.pow(2).sum() for rows in initial]).sum() / 2 / max(batch, 1)


def bpr_loss(
    user_final: torch.Tensor,
    pos_final: torch.Tensor,
    neg_final: torch.Tensor,
    user_init: torch.Tensor,
    pos_init: torch.Tensor,
    neg_init: torch.Tensor,
    l2: float,
) -> torch.Tensor:
    """Mean BPR loss of a batch of triples plus ``l2`` times half the batch's mean squared layer-0 norm.

    An empty batch gives a zero loss that still backpropagates (as zeros) into the inputs.
    """
    batch = user_final.shape[0]
    if batch == 0:
        parts = (user_final, pos_final, neg_final, user_init, pos_init, neg_init)
        return torch.stack([t.sum() for t in parts]).sum() * 0.0
    margin = (user_final * pos_final).sum(dim=1) - (user_final * neg_final).sum(dim=1)
    return F.softplus(-margin).mean() + l2 * l2_term(batch, user_init, pos_init, neg_init)


def sampled_softmax_loss(
    user_final: torch.Tensor,
    pos_final: torch.Tensor,
    neg_final: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    user_init: torch.Tensor,
    pos_init: torch.Tensor,
    temperature: float,
    l2: float,
) -> torch.Tensor:
    """Mean cross-entropy of each (user, positive) pair against negatives shared by the whole batch, plus
    ``l2`` times half the batch's mean squared layer-0 norm of its users and positives.

    Scores are dot products of the model's outputs (unit-length users under this loss) over
    ``temperature``; a shared negative that is the
    pair's own positive is masked out. ``user_final`` and ``pos_final`` are [B, d], ``neg_final`` is
    [N, d], ``positives`` [B] and ``negatives`` [N] are the item ids (for the mask). An empty batch gives a
    zero loss.
    """
    batch = user_final.shape[0]
    if batch == 0:
        parts = (user_final, pos_final, neg_final, user_init, pos_init)
        return torch.stack([t.sum() for t in parts]).sum() * 0.0
    pos = (user_final * pos_final).sum(dim=1, keepdim=True)
    neg = user_final @ neg_final.T
    neg = neg.masked_fill(positives[:, None] == negatives[None, :], float("-inf"))
    logits = torch.cat([pos, neg], dim=1) / temperature
    target = torch.zeros(batch, dtype=torch.int64, device=logits.device)
    return F.cross_entropy(logits, target) + l2 * l2_term(batch, user_init, pos_init)
