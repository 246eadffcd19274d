"""Boolean attention masks shared by the reference kernels (``True`` = the query may attend to the key).

Alignment: when a kernel gets fewer queries than keys (``Tq < Tk``, decoding with a KV cache), the queries are
the LAST ``Tq`` positions of the key sequence, so query ``i`` sits at absolute position ``i + Tk - Tq``. The causal
mask is therefore bottom-right aligned (as in flash-attn >= 2.1), not top-left as ``is_causal`` in PyTorch's
``scaled_dot_product_attention``; with one query and a cache, every cached key is visible.
"""
from __future__ import annotations

import torch


def query_positions(tq: int, tk: int, device: torch.device) -> torch.Tensor:
    """Absolute positions (Tq,) of the queries within the key sequence (bottom-right alignment)."""
    if tq > tk:
        raise ValueError(f"got {tq} queries but only {tk} keys; queries must be the last Tq of the keys")
    return torch.arange(tk - tq, tk, device=device)


def build_mask(
    tq: int,
    tk: int,
    *,
    causal: bool = True,
    window: int = 0,
    doc_ids: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor | None:
    """The allowed-pairs mask, broadcastable to (B, H, Tq, Tk), or None when every pair is allowed.

    Args:
        causal: key ``j`` is visible to the query at absolute position ``p`` only if ``j <= p``.
        window: > 0 also requires ``p - j < window`` (a sliding window of ``window`` keys, the query included).
        doc_ids: (B, Tk) ints; a query sees only keys of its own document (packed sequences).
        key_padding_mask: (B, Tk) bool, True marks padding keys, which nobody sees (PyTorch's convention).
    """
    if window < 0:
        raise ValueError(f"window={window} must be >= 0 (0 = no sliding window)")
    device = torch.device(device)
    qpos = query_positions(tq, tk, device)[:, None]  # (Tq, 1)
    kpos = torch.arange(tk, device=device)[None, :]  # (1, Tk)
    mask = None
    if causal:
        mask = kpos <= qpos
    if window > 0:
        win = (qpos - kpos < window) & (kpos - qpos < window)  # symmetric when not causal
        mask = win if mask is None else mask & win
    if mask is not None:
        mask = mask[None, None]  # (1, 1, Tq, Tk)
    if doc_ids is not None:
        if doc_ids.shape[-1] != tk:
            raise ValueError(f"doc_ids has length {doc_ids.shape[-1]}, expected Tk={tk}")
        same = doc_ids[:, tk - tq :, None] == doc_ids[:, None, :]  # (B, Tq, Tk)
        mask = same[:, None] if mask is None else mask & same[:, None]
    if key_padding_mask is not None:
        if key_padding_mask.shape[-1] != tk:
            raise ValueError(f"key_padding_mask has length {key_padding_mask.shape[-1]}, expected Tk={tk}")
        keep = ~key_padding_mask.bool()[:, None, None, :]  # (B, 1, 1, Tk)
        mask = keep if mask is None else mask & keep
    return mask
