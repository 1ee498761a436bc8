"""CF training losses over final (propagated) embeddings, each with an L2 term on layer-0 embeddings."""

from __future__ import annotations

from typing import Any

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
    mask = positives[:, None] == negatives[None, :]
    cross_entropy = _SharedNegativesSoftmax.apply(user_final / temperature, pos_final, neg_final, mask)
    return cross_entropy + l2 * l2_term(batch, user_init, pos_init)


class _SharedNegativesSoftmax(torch.autograd.Function):
    """Mean -log softmax of each row's positive score against negatives shared by the batch (masked ones
    left out), with one [B, N] buffer reused in place for the scores, their exponentials and their
    gradient: cross_entropy over concatenated, scaled, masked logits made three times the passes over it.
    Backward may run once (it consumes the buffer)."""

    @staticmethod
    def forward(
        ctx: Any, users: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        pos = (users * positives).sum(dim=1)
        scores = users @ negatives.T
        top = torch.maximum(scores.max(dim=1).values, pos)  # a masked score is its row's positive: no higher
        # exponents below -80 would give denormals (slow on x86) for terms under 1e-34 of the row's total
        exps = scores.sub_(top[:, None]).clamp_(min=-80.0).exp_().masked_fill_(mask, 0.0)
        pos_exp = (pos - top).exp()
        total = exps.sum(dim=1) + pos_exp
        ctx.save_for_backward(users, positives, negatives, exps, total, pos_exp)
        return (top + total.log() - pos).mean()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        if getattr(ctx, "consumed", False):
            raise RuntimeError("the shared-negatives softmax's backward ran twice: its buffer is spent")
        ctx.consumed = True
        users, positives, negatives, exps, total, pos_exp = ctx.saved_tensors
        scale = grad / users.shape[0]
        neg_grad = exps.mul_((scale / total)[:, None])  # d loss / d score of each shared negative
        pos_grad = ((pos_exp / total - 1) * scale)[:, None]
        return neg_grad @ negatives + pos_grad * positives, pos_grad * users, neg_grad.T @ users, None
