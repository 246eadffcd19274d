"""FlexAttention (PyTorch >= 2.5; Dong et al., 2024): softmax attention whose sparsity is a ``BlockMask``.

The mask is written as a ``mask_mod(b, h, q_idx, kv_idx) -> bool``; ``create_block_mask`` turns it into block
sparsity so whole blocks outside the causal band, the sliding window or the document are skipped. On CUDA the
kernel is compiled once (``torch.compile``); elsewhere PyTorch's unfused fallback runs (it materialises the
scores, which is fine for tests and small CPU runs).
"""
from __future__ import annotations

import math
import warnings

import torch

_COMPILED = None


def _flex():
    global _COMPILED
    from torch.nn.attention.flex_attention import flex_attention

    if _COMPILED is None:
        _COMPILED = torch.compile(flex_attention, dynamic=False)
    return flex_attention, _COMPILED


def flex_mask_mod(
    tq: int,
    tk: int,
    *,
    causal: bool = True,
    window: int = 0,
    doc_ids: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
):
    """A ``mask_mod`` equal to ``masks.build_mask`` (bottom-right aligned when Tq < Tk), or None for no mask."""
    if window < 0:
        raise ValueError(f"window={window} must be >= 0 (0 = no sliding window)")
    if not (causal or window or doc_ids is not None or key_padding_mask is not None):
        return None
    offset = tk - tq
    pad = key_padding_mask.bool() if key_padding_mask is not None else None

    def mask_mod(b, h, q_idx, kv_idx):
        p = q_idx + offset
        ok = kv_idx >= 0  # all-true tensor of the right kind under vmap
        if causal:
            ok = ok & (kv_idx <= p)
        if window > 0:
            ok = ok & (p - kv_idx < window) & (kv_idx - p < window)
        if doc_ids is not None:
            ok = ok & (doc_ids[b, p] == doc_ids[b, kv_idx])
        if pad is not None:
            ok = ok & ~pad[b, kv_idx]
        return ok

    return mask_mod


def flex_attention(
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
    """Softmax attention through a FlexAttention block mask; same mathematics as ``eager_attention``.

    Args: see ``genrec.attention``. Returns: (B, H, Tq, Dh). Fully masked query rows return zeros.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    b, _, tq, dh = q.shape
    tk = k.shape[-2]
    if tq > tk:
        raise ValueError(f"got {tq} queries but only {tk} keys; queries must be the last Tq of the keys")
    if doc_ids is not None and doc_ids.shape[-1] != tk:
        raise ValueError(f"doc_ids has length {doc_ids.shape[-1]}, expected Tk={tk}")
    if key_padding_mask is not None and key_padding_mask.shape[-1] != tk:
        raise ValueError(f"key_padding_mask has length {key_padding_mask.shape[-1]}, expected Tk={tk}")
    mod = flex_mask_mod(tq, tk, causal=causal, window=window, doc_ids=doc_ids, key_padding_mask=key_padding_mask)
    per_row = doc_ids is not None or key_padding_mask is not None
    block_mask = None
    if mod is not None:
        block_mask = create_block_mask(mod, b if per_row else None, None, tq, tk, device=q.device)
    scale = 1.0 / math.sqrt(dh) if scale is None else scale
    if q.device.type == "cpu" and torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        raise ValueError(
            f"model.attention='flex' cannot train on CPU: FlexAttention has no CPU backward in torch "
            f"{torch.__version__}. Train with sdpa or eager (same mathematics) and decode with flex, or use a GPU."
        )
    eager_fn, compiled_fn = _flex()
    if q.is_cuda:
        return compiled_fn(q, k, v, block_mask=block_mask, scale=scale)
    with warnings.catch_warnings():  # the unfused fallback warns on every call; it is the intended path on CPU
        warnings.simplefilter("ignore", UserWarning)
        return eager_fn(q, k, v, block_mask=block_mask, scale=scale)
