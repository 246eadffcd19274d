"""Reference softmax attention (Vaswani et al., 2017), written out in plain PyTorch ops.

Every other softmax kernel is tested against this one. It materialises the (B, H, Tq, Tk) score matrix, so it
is the slowest and most memory-hungry choice, and the easiest to read.
"""
from __future__ import annotations

import math

import torch

from .masks import build_mask


def eager_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    window: int = 0,
    doc_ids: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v; query rows that may see no key return zeros (as PyTorch's SDPA does).

    Args: see ``genrec.attention`` (q: (B, H, Tq, Dh), k and v: (B, H, Tk, Dh)).
    Returns: (B, H, Tq, Dh).
    """
    tq, tk = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.matmul(q, k.transpose(-2, -1)) * scale  # (B, H, Tq, Tk)
    mask = build_mask(
        tq, tk, causal=causal, window=window, doc_ids=doc_ids, key_padding_mask=key_padding_mask, device=q.device
    )
    if mask is None:
        return torch.matmul(scores.softmax(dim=-1), v)
    # A finite fill keeps fully masked rows free of NaN (also in backward); they are zeroed afterwards.
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = scores.softmax(dim=-1) * mask.any(dim=-1, keepdim=True)
    return torch.matmul(probs.to(v.dtype), v)
