"""Attention kernels: one registry, chosen by ``cfg.model.attention`` and swapped without touching the model.

Every kernel is a pure function with one signature::

    fn(q, k, v, *, causal=True, window=0, doc_ids=None, key_padding_mask=None, scale=None) -> (B, H, Tq, Dh)

    q: (B, H, Tq, Dh); k, v: (B, H, Tk, Dh) with Tq <= Tk.
    causal: a query sees only keys at or before its position. When Tq < Tk (decoding with a KV cache) the
        queries are the LAST Tq positions of the keys (bottom-right alignment), so one new query sees the
        whole cache; kernels never apply PyTorch's top-left ``is_causal`` to Tq != Tk.
    window: > 0 limits each query to the ``window`` most recent keys (itself included); 0 = unlimited.
    doc_ids: (B, Tk) ints; packed sequences, a query sees only keys of its own document.
    key_padding_mask: (B, Tk) bool, True marks padding keys (PyTorch's convention); query rows that see no key
        at all return zeros.
    scale: softmax temperature, default 1 / sqrt(Dh).

The model's attention module owns projections, positions (RoPE) and the KV cache; only this function changes.
A kernel that cannot honour an option raises ValueError naming it (e.g. ``linear`` has no window).

    eager   reference softmax attention in plain ops (materialises the scores)
    sdpa    torch.nn.functional.scaled_dot_product_attention (FlashAttention-2 / memory-efficient backends)
    flash   the flash-attn package (CUDA; varlen packing for padding and documents)
    flex    FlexAttention block masks (causal, sliding window, packed documents)
    linear  causal linear attention, elu+1 features, O(T) (different mathematics: not softmax)
    hstu    HSTU pointwise SiLU attention normalised by length (different mathematics: not softmax)
"""
from __future__ import annotations

from typing import Protocol

import torch

from ..config import lookup
from .eager import eager_attention
from .flash import flash_attention
from .flex import flex_attention
from .hstu import hstu_attention
from .linear import linear_attention
from .sdpa import sdpa_attention


class AttentionFn(Protocol):
    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        *,
        causal: bool = True,
        window: int = 0,
        doc_ids: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        scale: float | None = None,
    ) -> torch.Tensor: ...


ATTENTION: dict[str, AttentionFn] = {
    "eager": eager_attention,
    "sdpa": sdpa_attention,
    "flash": flash_attention,
    "flex": flex_attention,
    "linear": linear_attention,
    "hstu": hstu_attention,
}


def get_attention(name: str, field: str = "model.attention") -> AttentionFn:
    """The kernel registered as ``name``; a miss raises ValueError naming ``field`` and listing ``sorted(ATTENTION)``."""
    return lookup(ATTENTION, name, field=field)


__all__ = ["ATTENTION", "AttentionFn", "get_attention"]
