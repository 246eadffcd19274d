"""Next-item losses over an item embedding table, shared by the ID models (SASRec, HSTU).

``ce``: full softmax over all N items at every labelled position. ``sampled``: softmax over the positive and
``num_negatives`` items drawn uniformly per position (a negative equal to the positive is masked), the loss of HSTU's
recipe (128 negatives); with ``num_negatives >= N`` every other item is a negative, which is exactly ``ce``.
Logits are ``h . e / temperature``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def item_loss(kind: str, h: torch.Tensor, labels: torch.Tensor, table: torch.Tensor, temperature: float = 1.0,
              num_negatives: int = 128) -> torch.Tensor:
    """Mean loss over the labelled positions.

    Args:
        kind: ``ce`` or ``sampled``.
        h: (B, T, D) states; labels: (B, T) next items (0 = no label); table: (N + 1, D) item embeddings (row 0 pad).
    """
    mask = labels > 0
    hp, pos = h[mask], labels[mask]  # (P, D), (P,)
    n = table.shape[0] - 1
    if kind == "ce" or (kind == "sampled" and num_negatives >= n):
        logits = hp @ table[1:].T / temperature
        return F.cross_entropy(logits.float(), pos - 1)
    if kind != "sampled":
        raise ValueError(f"loss={kind!r} is not one of ['ce', 'sampled']")
    neg = torch.randint(1, n + 1, (pos.shape[0], num_negatives), device=h.device)
    pos_logit = (hp * table[pos]).sum(-1, keepdim=True)  # (P, 1)
    neg_logit = torch.einsum("pd,pkd->pk", hp, table[neg]).masked_fill(neg == pos[:, None], float("-inf"))
    logits = torch.cat([pos_logit, neg_logit], dim=1) / temperature
    return F.cross_entropy(logits.float(), torch.zeros_like(pos))


__all__ = ["item_loss"]
