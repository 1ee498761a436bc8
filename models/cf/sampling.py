"""Uniform BPR negatives: for each positive (user, item), one item that user never interacted with."""

from __future__ import annotations

import numpy as np
import torch


def seen_keys(
    users: np.ndarray | torch.Tensor, items: np.ndarray | torch.Tensor, num_items: int
) -> torch.Tensor:
    """Sorted unique ``user * num_items + item`` keys (int64) of known interactions."""
    u = torch.as_tensor(users).to(torch.int64)
    i = torch.as_tensor(items).to(device=u.device, dtype=torch.int64)
    return torch.unique(u * num_items + i, sorted=True)


def is_seen(keys: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """Which ``keys`` occur in the sorted tensor ``seen``."""
    if seen.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    pos = torch.searchsorted(seen, keys).clamp(max=seen.numel() - 1)
    return seen[pos] == keys


def sample_bpr_triples(
    users: torch.Tensor,
    items: torch.Tensor,
    num_items: int,
    seen_keys: torch.Tensor,
    generator: torch.Generator,
    rounds: int = 8,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(u, pos, neg) with one uniform never-seen negative per positive pair, on the device of ``users``.

    Negatives are drawn with ``generator`` and redrawn (only for the pairs that hit a seen item) for up to
    ``rounds`` rounds; a pair still without a negative after that (in practice a user who has seen nearly
    the whole catalogue) is dropped, so the result can be shorter than the input. ``seen_keys`` (see
    :func:`seen_keys`) should hold every known interaction; the pair's own positive is never returned as
    its negative either way. Same generator state and inputs, same triples.
    """
    device = users.device
    users, items = users.to(torch.int64), items.to(device=device, dtype=torch.int64)
    seen = seen_keys.to(device=device, dtype=torch.int64)
    neg = torch.full_like(users, -1)
    todo = torch.arange(users.numel(), device=device)
    for _ in range(rounds):
        if todo.numel() == 0:
            break
        draw = torch.randint(num_items, (todo.numel(),), generator=generator, device=generator.device)
        draw = draw.to(device)
        ok = ~is_seen(users[todo] * num_items + draw, seen) & (draw != items[todo])
        neg[todo[ok]] = draw[ok]
        todo = todo[~ok]
    keep = neg >= 0
    return users[keep], items[keep], neg[keep]
