"""Causal linear attention (Katharopoulos et al., 2020, "Transformers are RNNs"), O(T) in sequence length.

softmax(q k^T) is replaced by phi(q) phi(k)^T with phi(x) = elu(x) + 1, so
    out_i = phi(q_i)^T S_i / (phi(q_i)^T z_i + eps),   S_i = sum_{j<=i} phi(k_j) v_j^T,   z_i = sum_{j<=i} phi(k_j).
We evaluate it chunk by chunk: inside a chunk of C positions the (C, C) causal product is formed directly, and
across chunks the running state (S, z) carries the past, giving O(T C Dh + T Dh^2) time and no (T, T) matrix.
This is NOT softmax attention: its test oracle is ``linear_attention_reference`` (the same formula, O(T^2)).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .masks import build_mask

EPS = 1e-6
CHUNK = 64


def feature_map(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1.0


def _check(window: int, doc_ids, scale) -> None:
    if window:
        raise ValueError(f"model.attention='linear' has no sliding window (got window={window}); use flex or sdpa")
    if doc_ids is not None:
        raise ValueError("model.attention='linear' does not support doc_ids (packed documents); use flex or sdpa")
    if scale is not None:
        raise ValueError(f"model.attention='linear' takes no softmax scale (got scale={scale}); leave it None")


def linear_attention_reference(q, k, v, *, causal=True, key_padding_mask=None) -> torch.Tensor:
    """The O(T^2) form of the same formula, used as the test oracle and for cached decoding (Tq < Tk)."""
    fq, fk = feature_map(q), feature_map(k)
    a = torch.matmul(fq, fk.transpose(-2, -1))  # (B, H, Tq, Tk), non-negative
    mask = build_mask(q.shape[-2], k.shape[-2], causal=causal, key_padding_mask=key_padding_mask, device=q.device)
    if mask is not None:
        a = a * mask
    return torch.matmul(a, v) / (a.sum(-1, keepdim=True) + EPS)


def linear_attention(
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
    """Linear attention; query rows that see no key return zeros.

    Raises:
        ValueError: window, doc_ids or scale given (not defined for this kernel).
    """
    _check(window, doc_ids, scale)
    b, h, tq, dh = q.shape
    tk = k.shape[-2]
    if tq != tk:  # decoding with a cache: Tq (usually 1) rows against Tk keys, O(Tq Tk)
        return linear_attention_reference(q, k, v, causal=causal, key_padding_mask=key_padding_mask)
    fq, fk = feature_map(q), feature_map(k)
    if key_padding_mask is not None:
        fk = fk * (~key_padding_mask.bool())[:, None, :, None]  # a padded key adds nothing to S or z
    if not causal:
        s = torch.matmul(fk.transpose(-2, -1), v)  # (B, H, Dh, Dv)
        z = fk.sum(-2)  # (B, H, Dh)
        return torch.matmul(fq, s) / (torch.einsum("bhtd,bhd->bht", fq, z)[..., None] + EPS)
    c = min(CHUNK, tq)
    n = -(-tq // c)
    pad = n * c - tq
    if pad:  # zero features at the end: they neither contribute nor are returned
        fq, fk, v = (F.pad(x, (0, 0, 0, pad)) for x in (fq, fk, v))
    fq, fk, vc = (x.reshape(b, h, n, c, x.shape[-1]) for x in (fq, fk, v))  # (B, H, n, C, D)
    kv = torch.matmul(fk.transpose(-2, -1), vc)  # (B, H, n, Dh, Dv): each chunk's sum of phi(k) v^T
    s_prev = torch.cumsum(kv, dim=2) - kv  # state before each chunk
    z_all = fk.sum(-2)  # (B, H, n, Dh)
    z_prev = torch.cumsum(z_all, dim=2) - z_all
    tril = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    a = torch.matmul(fq, fk.transpose(-2, -1)) * tril  # (B, H, n, C, C)
    num = torch.matmul(a, vc) + torch.matmul(fq, s_prev)
    den = a.sum(-1) + torch.einsum("bhncd,bhnd->bhnc", fq, z_prev)
    out = num / (den[..., None] + EPS)
    return out.reshape(b, h, n * c, -1)[:, :, :tq]
