"""PyTorch's fused ``scaled_dot_product_attention``: FlashAttention-2 / memory-efficient / math backends.

PyTorch picks the backend: the flash backend needs no explicit mask (pure causal with Tq == Tk, or none), so
masks (padding, windows, documents, or causal with a KV cache where Tq < Tk) fall back to the memory-efficient or
math backends. ``is_causal=True`` is top-left aligned, which is right only when Tq == Tk; with a cache we pass
the bottom-right aligned boolean mask from ``masks.build_mask`` instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .masks import build_mask


def sdpa_attention(
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
    """Same mathematics as ``eager_attention``; fully masked query rows return zeros.

    PyTorch's CPU kernels return zeros for a query row that sees no key, but CUDA backends may return NaN
    (pytorch/pytorch#103749, #110213), which the next layer spreads through 0 * NaN. So such rows attend to every
    key here and are zeroed afterwards: the same result on every backend, and no gradient from them.

    Args: see ``genrec.attention``. Returns: (B, H, Tq, Dh).
    """
    tq, tk = q.shape[-2], k.shape[-2]
    plain = window == 0 and doc_ids is None and key_padding_mask is None
    if plain and (not causal or tq == tk):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    mask = build_mask(
        tq, tk, causal=causal, window=window, doc_ids=doc_ids, key_padding_mask=key_padding_mask, device=q.device
    )
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    seen = mask.any(dim=-1, keepdim=True)  # (B | 1, 1, Tq, 1): rows that see at least one key
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask | ~seen, scale=scale)
    return out.masked_fill(~seen, 0.0)
