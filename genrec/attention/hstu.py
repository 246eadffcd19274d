"""HSTU pointwise attention (Zhai et al., 2024, "Actions Speak Louder than Words", Eq. 2).

HSTU drops the softmax: A = SiLU(q k^T * scale) masked to the allowed pairs, divided by a length n, times v.
Without a softmax there is no normalisation over keys, so the output keeps the "intensity" of a user's
engagement. The paper divides by the sequence length; we divide each query row by the number of keys it may
see (for the last position of an unpadded sequence that is the sequence length), so that decoding with a KV
cache gives exactly the logits of the full forward pass. The relative attention bias of the paper is left out:
positions come from the model (RoPE or learned). Fast fused kernels are in HSTU's repository; this is the
dense PyTorch form, with ``hstu_attention_reference`` (an explicit loop) as its oracle.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .masks import build_mask


def hstu_attention(
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
    """sum_j SiLU(q_i . k_j * scale) v_j / n_i over allowed keys j, n_i = their count (rows seeing none give 0).

    Args: see ``genrec.attention``. Returns: (B, H, Tq, Dh).
    """
    tq, tk = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    a = F.silu(torch.matmul(q, k.transpose(-2, -1)) * scale)  # (B, H, Tq, Tk)
    mask = build_mask(
        tq, tk, causal=causal, window=window, doc_ids=doc_ids, key_padding_mask=key_padding_mask, device=q.device
    )
    if mask is None:
        return torch.matmul(a, v) / tk
    a = a * mask
    n = mask.sum(-1, keepdim=True).clamp(min=1).to(a.dtype)  # (B or 1, 1, Tq, 1)
    return torch.matmul(a, v) / n


def hstu_attention_reference(q, k, v, *, causal=True, window=0, doc_ids=None, key_padding_mask=None, scale=None):
    """The same formula as an explicit loop over (b, h, i, j); tiny shapes only."""
    b, h, tq, dh = q.shape
    tk = k.shape[-2]
    scale = 1.0 / math.sqrt(dh) if scale is None else scale
    out = torch.zeros(b, h, tq, v.shape[-1], dtype=q.dtype)
    for bi in range(b):
        for i in range(tq):
            p = i + tk - tq
            keys = [
                j
                for j in range(tk)
                if (not causal or j <= p)
                and (window == 0 or abs(p - j) < window)
                and (doc_ids is None or doc_ids[bi, p] == doc_ids[bi, j])
                and (key_padding_mask is None or not key_padding_mask[bi, j])
            ]
            for hi in range(h):
                for j in keys:
                    out[bi, hi, i] += F.silu((q[bi, hi, i] @ k[bi, hi, j]) * scale) * v[bi, hi, j]
                if keys:
                    out[bi, hi, i] /= len(keys)
    return out
