"""FlexAttention (PyTorch >= 2.5; Dong et al., 2024): softmax attention whose sparsity is a ``BlockMask``.

The mask is written as a ``mask_mod(b, h, q_idx, kv_idx) -> bool``; ``create_block_mask`` turns it into block
sparsity so whole blocks outside the causal band, the sliding window or the document are skipped.

On CUDA the kernel is compiled with dynamic shapes (``torch.compile(dynamic=True)``): lengths change with every
batch and decode step, and a static compile recompiles per shape until dynamo's recompile limit, after which it
silently runs the unfused path that materialises the score matrix. Dynamic shapes keep it to a few graphs (one
per mask kind), whatever the lengths (tests/attention/test_flex_compile.py counts them).

The block mask is built once per forward: every layer of a model passes the same masks for the same lengths, so
the last block mask is kept with the tensors it was built from and reused while they are unchanged.

Elsewhere PyTorch's unfused fallback runs (it materialises the scores, which is fine for tests and small CPU
runs): inductor's CPU flex template fails to compile padding masks with dynamic shapes in torch 2.13.
"""
from __future__ import annotations

import math
import warnings

import torch

COMPILE_BACKEND = "inductor"  # tests count graphs with a counting backend instead
_COMPILED: dict[object, object] = {}
_LAST_MASK: list = []  # [key, tensors, block_mask] of the last block mask built


def _flex():
    """(eager flex_attention, flex_attention compiled with dynamic shapes for ``COMPILE_BACKEND``)."""
    from torch.nn.attention.flex_attention import flex_attention

    if COMPILE_BACKEND not in _COMPILED:
        _COMPILED[COMPILE_BACKEND] = torch.compile(flex_attention, dynamic=True, backend=COMPILE_BACKEND)
    return flex_attention, _COMPILED[COMPILE_BACKEND]


def _use_compiled(q: torch.Tensor) -> bool:
    return q.is_cuda


def _create_block_mask(mask_mod, b, tq: int, tk: int, device):
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(mask_mod, b, None, tq, tk, device=device)


def block_mask_for(b: int, tq: int, tk: int, *, causal, window, doc_ids, key_padding_mask, device):
    """The ``BlockMask`` for these masks, or None; reused while the same mask tensors come back unchanged."""
    tensors = (doc_ids, key_padding_mask)
    key = (b, tq, tk, causal, window, str(device), tuple(None if t is None else t._version for t in tensors))
    if _LAST_MASK and _LAST_MASK[0] == key and all(x is y for x, y in zip(_LAST_MASK[1], tensors)):
        return _LAST_MASK[2]
    mod = flex_mask_mod(tq, tk, causal=causal, window=window, doc_ids=doc_ids, key_padding_mask=key_padding_mask)
    per_row = doc_ids is not None or key_padding_mask is not None
    block_mask = None if mod is None else _create_block_mask(mod, b if per_row else None, tq, tk, device)
    _LAST_MASK[:] = [key, tensors, block_mask]
    return block_mask


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
    b, _, tq, dh = q.shape
    tk = k.shape[-2]
    if tq > tk:
        raise ValueError(f"got {tq} queries but only {tk} keys; queries must be the last Tq of the keys")
    if doc_ids is not None and doc_ids.shape[-1] != tk:
        raise ValueError(f"doc_ids has length {doc_ids.shape[-1]}, expected Tk={tk}")
    if key_padding_mask is not None and key_padding_mask.shape[-1] != tk:
        raise ValueError(f"key_padding_mask has length {key_padding_mask.shape[-1]}, expected Tk={tk}")
    block_mask = block_mask_for(
        b, tq, tk, causal=causal, window=window, doc_ids=doc_ids, key_padding_mask=key_padding_mask, device=q.device
    )
    scale = 1.0 / math.sqrt(dh) if scale is None else scale
    if q.device.type == "cpu" and torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        raise ValueError(
            f"model.attention='flex' cannot train on CPU: FlexAttention has no CPU backward in torch "
            f"{torch.__version__}. Train with sdpa or eager (same mathematics) and decode with flex, or use a GPU."
        )
    eager_fn, compiled_fn = _flex()
    if _use_compiled(q):
        return compiled_fn(q, k, v, block_mask=block_mask, scale=scale)
    with warnings.catch_warnings():  # the unfused fallback warns on every call; it is the intended path on CPU
        warnings.simplefilter("ignore", UserWarning)
        return eager_fn(q, k, v, block_mask=block_mask, scale=scale)
