"""HSTU: Hierarchical Sequential Transduction Units over item IDs (Zhai et al., ICML 2024, "Actions Speak Louder
than Words"), the ID-based long-history model of meta-recsys/generative-recommenders.

One HSTU block (Eq. 1-3 of the paper):

    U, V, Q, K = split(SiLU(LayerNorm(X) W_uvqk))                       # one projection, SiLU on all four
    A = SiLU(Q K^T + rab(i - j)) / n  (causal)                          # pointwise attention, no softmax
    Y = X + W_o(Dropout(U * LayerNorm(A V)))                            # U-gated, normalised output

with ``rab`` a learned relative-position bias (one scalar per head and clipped distance) and ``n`` the number of
keys each query sees (as the ``hstu`` kernel of ``genrec.attention``; for the last position, the sequence length).
The attention is computed here because of the relative bias, which the kernels do not take; ``test_hstu.py`` checks
it against an explicit loop. Items enter as ``emb * sqrt(D)``
plus a learned absolute position; outputs and item embeddings are L2-normalised and compared by dot product over
a temperature, trained with sampled softmax (HSTU's ML-1M recipe: 128 negatives, temperature 0.05) or full
cross-entropy (``genrec.models.losses``).

``reference=True`` (``model.hstu.reference_details``) takes the research code's details where they differ from the
above: ``n`` a constant (``max_len``; the reference divides by its padded length, 211 for 200 history items: the
layer norm after it cancels a constant up to its eps), layer norms with eps 1e-6 and no scale or shift, no bias on
the U/V/Q/K projection, W_o Xavier-uniform, absolute positions counted from the oldest item of the window (the
reference pads on the right) and initialised Xavier-normal (its ``reset_params`` overwrites the truncated normal it
first draws). ``shared_bias`` (``model.hstu.shared_bias``) gives each layer one relative-position table for all its
heads, as the reference adds its (B, N, N) bias to every head (a separate switch: it changes models with several
heads, and runs recorded before it existed had one table per head).

``time_buckets`` > 0 (``model.hstu.time_bias``) adds the paper's time term to ``rab``: a learned weight per bucket
of ``t_next(i) - t(j)``, the time from key item j to the request that query position i answers (the time of the
item it predicts; for the last history position, the target's time, which HSTU's research code also gives the
model at evaluation), bucketed as ``floor(ln(max(|gap|, 1)) / 0.301)`` clipped to ``0 .. time_buckets`` (its
ML-1M recipe: 128, gaps in seconds). Each layer has its own table (one per head, or one shared with
``shared_bias``). The data must have timestamps: ``genrec.data.Split`` then gives ``input_times`` /
``label_times`` for training and ``history_times`` / ``target_time`` for evaluation. ML-1M's ``sequences.txt`` has
none; ``ratings.dat`` has them.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import ModelContext, Output, Recommender
from .losses import item_loss


def time_gap_buckets(query_times: torch.Tensor, key_times: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """(B, T, T) bucket of ``query_times[b, i] - key_times[b, j]``: ``floor(ln(max(|gap|, 1)) / 0.301)`` clipped to
    ``0 .. num_buckets`` (HSTU's log buckets, about 2.3 per doubling: 1 s -> 0, 1 min -> 13, 1 day -> 37,
    1 year -> 57).

    Args:
        query_times: (B, T) int64 time of the request each position answers.
        key_times: (B, T) int64 time of each history item.
    """
    gap = (query_times.long()[:, :, None] - key_times.long()[:, None, :]).abs().clamp(min=1)  # int64: exact seconds
    return (torch.log(gap.float()) / 0.301).long().clamp(0, num_buckets)


def request_times(batch: dict[str, torch.Tensor], key: str = "history") -> torch.Tensor:
    """(B, T) time of the request each position of ``batch[key]`` answers: the next item's time, and for the last
    position the target's (``batch["target_time"]``)."""
    missing = [k for k in (f"{key}_times", "target_time") if k not in batch]
    if missing:
        raise ValueError(f"HSTU with model.hstu.time_bias=true needs {missing} in the batch (the timestamps "
                         f"genrec.data.Split(times_for=...) gives)")
    times = batch[f"{key}_times"]
    return torch.cat([times[:, 1:], batch["target_time"][:, None].to(times.dtype)], dim=1)


class HSTUBlock(nn.Module):
    """One HSTU layer over left-padded sequences (padding keys masked, padding rows zeroed)."""

    def __init__(self, dim: int, heads: int, dqk: int, dv: int, max_len: int, dropout: float,
                 reference: bool = False, shared_bias: bool = False, time_buckets: int = 0):
        super().__init__()
        self.heads, self.dqk, self.dv, self.reference = heads, dqk, dv, reference
        norm = dict(eps=1e-6, elementwise_affine=False) if reference else {}
        self.norm_in = nn.LayerNorm(dim, **norm)
        self.uvqk = nn.Linear(dim, heads * (2 * dv + 2 * dqk), bias=not reference)
        self.norm_attn = nn.LayerNorm(heads * dv, **norm)
        self.out = nn.Linear(heads * dv, dim)
        self.drop = nn.Dropout(dropout)
        self.max_len = max_len
        # bias of distance j - i: one table per head, or one the heads share (the research code's)
        self.rel_bias = nn.Parameter(torch.randn(1 if shared_bias else heads, 2 * max_len - 1) * 0.02)
        # weight of time-gap bucket 0 .. time_buckets (one table per head, or shared), when the model reads times
        self.time_bias = (nn.Parameter(torch.randn(1 if shared_bias else heads, time_buckets + 1) * 0.02)
                          if time_buckets else None)
        nn.init.normal_(self.uvqk.weight, std=0.02)  # the reference's U, V, Q, K projection
        if reference:
            nn.init.xavier_uniform_(self.out.weight)
        else:
            nn.init.zeros_(self.uvqk.bias)

    def bias(self, t: int, device) -> torch.Tensor:
        """(H, T, T) relative-position bias ``rab[h, j - i]`` ((1, T, T) when the heads share it), distances
        clipped to the table."""
        pos = torch.arange(t, device=device)
        rel = (pos[None, :] - pos[:, None]).clamp(-(self.max_len - 1), self.max_len - 1) + self.max_len - 1
        return self.rel_bias[:, rel]

    def forward(self, x: torch.Tensor, pad: torch.Tensor, gaps: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D), pad (B, T) True on padding, gaps (B, T, T) time-gap buckets (``time_gap_buckets``; with a
        time bias) -> (B, T, D)."""
        b, t, _ = x.shape
        h = F.silu(self.uvqk(self.norm_in(x)))
        u, v, q, k = torch.split(h, [self.heads * self.dv, self.heads * self.dv, self.heads * self.dqk,
                                     self.heads * self.dqk], dim=-1)
        q = q.view(b, t, self.heads, self.dqk).transpose(1, 2)  # (B, H, T, dqk)
        k = k.view(b, t, self.heads, self.dqk).transpose(1, 2)
        v = v.view(b, t, self.heads, self.dv).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) + self.bias(t, x.device)  # (B, H, T, T)
        if self.time_bias is not None:
            assert gaps is not None, "a block with a time bias needs the time-gap buckets"
            scores = scores + self.time_bias[:, gaps].transpose(0, 1)  # (H or 1, B, T, T) -> (B, H or 1, T, T)
        a = F.silu(scores)
        allowed = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()[None, None] & ~pad[:, None, None, :]
        a = a * allowed
        if self.reference:  # a constant
            n = torch.tensor(float(self.max_len), dtype=a.dtype, device=a.device)
        else:  # the keys each query sees
            n = allowed.sum(-1, keepdim=True).clamp(min=1).to(a.dtype)
        attn = (a @ v / n).transpose(1, 2).reshape(b, t, self.heads * self.dv)
        y = x + self.out(self.drop(u * self.norm_attn(attn)))
        return y.masked_fill(pad[..., None], 0.0)


class HSTU(Recommender):
    """Stacked HSTU blocks over item IDs (``example_mode = "sequence"``; scores every item exactly)."""

    example_mode = "sequence"

    def __init__(self, num_items: int, max_len: int, dim: int = 50, layers: int = 2, heads: int = 1,
                 dqk: int = 50, dv: int = 50, dropout: float = 0.2, loss: str = "sampled", num_negatives: int = 128,
                 temperature: float = 0.05, negatives: str = "position", reference: bool = False,
                 shared_bias: bool = False, time_buckets: int = 0):
        super().__init__()
        if time_buckets < 0:
            raise ValueError(f"time_buckets={time_buckets}: expected >= 0 (0 = no time bias)")
        self.num_items, self.dim, self.reference = num_items, dim, reference
        self.time_buckets = time_buckets
        self.times_for = "model.hstu.time_bias" if time_buckets else ""
        self.loss, self.num_negatives, self.temperature = loss, num_negatives, temperature
        self.negatives = negatives
        self.item_emb = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(HSTUBlock(dim, heads, dqk, dv, max_len, dropout, reference, shared_bias,
                                              time_buckets) for _ in range(layers))
        # items std 0.02 (truncated at 2 std); positions std sqrt(1 / D), so that after the sqrt(D) input scale an
        # item and its position start at the same size, or (reference) Xavier-normal as the research code ends up
        nn.init.trunc_normal_(self.item_emb.weight, std=0.02, a=-0.04, b=0.04)
        if reference:
            nn.init.xavier_normal_(self.pos_emb.weight)
        else:
            nn.init.trunc_normal_(self.pos_emb.weight, std=1.0 / math.sqrt(dim), a=-2.0 / math.sqrt(dim),
                                  b=2.0 / math.sqrt(dim))
        with torch.no_grad():
            self.item_emb.weight[0].zero_()  # the padding row

    @classmethod
    def from_config(cls, cfg, ctx: ModelContext) -> "HSTU":
        c = cfg.model.hstu
        if c.time_bias and c.time_buckets < 1:
            raise ValueError(f"model.hstu.time_buckets={c.time_buckets}: expected >= 1 with model.hstu.time_bias=true")
        return cls(ctx.num_items, cfg.data.max_history, c.dim, c.layers, c.heads, c.dqk, c.dv, c.dropout, c.loss,
                   c.num_negatives, c.temperature, c.negatives, c.reference_details, c.shared_bias,
                   c.time_buckets if c.time_bias else 0)

    def encode(self, seq: torch.Tensor, times: torch.Tensor | None = None,
               query_times: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) left-padded item ids -> (B, T, D) L2-normalised states (position t sees items <= t).

        With a time bias: ``times`` (B, T) the time of each item, ``query_times`` (B, T) the time of the request
        each position answers (``request_times``).
        """
        gaps = None
        if self.time_buckets:
            if times is None or query_times is None:
                raise ValueError("HSTU with model.hstu.time_bias=true needs the items' timestamps in the batch "
                                 "(genrec.data.Split(times_for=...) gives them)")
            gaps = time_gap_buckets(query_times, times, self.time_buckets)
        pad = seq == 0
        t = seq.shape[1]
        if self.reference:  # 0 = the oldest item of the window (the reference's right-padded rows)
            pos = ((~pad).long().cumsum(-1) - 1).clamp(min=0)
        else:  # t - 1 = the newest item
            pos = torch.arange(t, device=seq.device)
        x = self.item_emb(seq) * math.sqrt(self.dim) + self.pos_emb(pos)
        x = self.drop(x).masked_fill(pad[..., None], 0.0)
        for block in self.blocks:
            x = block(x, pad, gaps)
        return F.normalize(x, dim=-1)

    def item_table(self) -> torch.Tensor:
        return F.normalize(self.item_emb.weight, dim=-1)

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        h = self.encode(batch["input"], batch.get("input_times"), batch.get("label_times"))
        return Output(loss=item_loss(self.loss, h, batch["labels"], self.item_table(), self.temperature,
                                     self.num_negatives, self.negatives))

    def score(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        times = (batch.get("history_times"), request_times(batch)) if self.time_buckets else ()
        h = self.encode(batch["history"], *times)[:, -1]
        with torch.autocast(h.device.type, enabled=False):  # fp32 scores: bf16 would tie many items
            return h.float() @ self.item_table().float().T / self.temperature


__all__ = ["HSTU", "HSTUBlock", "request_times", "time_gap_buckets"]
