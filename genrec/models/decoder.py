"""Decoder-only generative recommender over semantic-ID tokens, with swappable attention kernels and a KV cache.

TIGER (Rajput et al., NeurIPS 2023) generates the next item's semantic ID with an encoder-decoder; here one causal
transformer reads the user's history as a flat token stream and continues it with the next item's L codes, as a
language model continues text (the decoder-only setting of HSTU, Zhai et al. 2024, and of LLM-based
recommenders). Blocks are modern pre-norm blocks (RMSNorm, RoPE (Su et al., 2021) or learned positions,
SwiGLU (Shazeer, 2020) or GELU MLP); the attention kernel is ``get_attention(cfg.model.attention)``, so eager,
sdpa, flash, flex, linear and hstu share every weight and line of this file.

Vocabulary (the output head is tied to the embedding):

    0 pad | 1 bos | 2 .. 2+U-1 hashed user tokens | one block of K_l codes per level l at offset_l = 2 + U + sum(K_<l)

Sequence: ``[pad..., bos, user, codes of history item 1, ..., codes of the last history item, target codes]``.
Padding goes to the FRONT (right alignment), so the target's L codes are the last L columns of every row and
generated codes are appended at the same column for all rows. Positions count real tokens only
(``cumsum(not pad) - 1``), so a token's position does not depend on how much padding its row has, and cached
decoding continues each row at its own next position. Padding keys are masked (``key_padding_mask``).

``model.decoder.prefix_embedding`` adds to each code token's input a learned row of its ID prefix (the item's codes
up to and including this one, ``SidVocab.prefix_ids``): at the last level one row per item, so items that share
content codes still differ at the input, while the output stays on the shared codes. A token's prefix is known
when it is read (in training and when decoding feeds a generated code), so nothing of the code it predicts leaks.
``model.decoder.prefix_output`` ties the same rows to the output: at level l >= 1 code c also scores
``h . row(prefix + c)``, so at the last level every item has an output row of its own.
``model.decoder.prefix_buckets`` caps the rows at B for catalogs too large for a row per item: prefix id i uses row
1 + (i - 1) mod B (at the last level the ids follow the item ids, so items B ids apart share a row), and the output
side scores against the B rows instead of a row per prefix.

Level l of an item is scored only over that level's K_l codes (``log_softmax`` over the level's block), in
training and in decoding alike. ``model.decoder.loss_on``: "target" trains on the target item's L codes (TIGER's
next-item examples, one per history prefix); "all" trains on the codes of every item of the sequence, each given
the items before it (causal language-model training, one example per user), which gives more signal per step.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import get_attention
from ..attention.linear import EPS as LINEAR_EPS
from ..attention.linear import feature_map as linear_features
from ..config import lookup
from ..data.sequences import NextItemDataset, UserSequenceDataset
from .base import ModelContext, Output
from .vocab import SidModel, SidVocab

PAD, BOS, NUM_SPECIAL = 0, 1, 2


# ------------------------------------------------------------------------------------------------- blocks
def rope_cos_sin(positions: torch.Tensor, dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of rotary angles for integer positions (B, T): each (B, 1, T, dim), broadcast over heads."""
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim))
    ang = positions.float()[..., None] * inv  # (B, T, dim/2)
    ang = torch.cat([ang, ang], dim=-1)[:, None]  # (B, 1, T, dim)
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, Dh) by the angles (the half-split convention of GPT-NeoX / Llama)."""
    x1, x2 = x.chunk(2, dim=-1)
    return (x * cos + torch.cat([-x2, x1], dim=-1) * sin).to(x.dtype)


class Attention(nn.Module):
    """Multi-head self-attention: owns the projections, RoPE and the KV cache; the kernel is a pure function."""

    def __init__(self, dim: int, heads: int, kernel: str, rope: bool, window: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"model.decoder.dim={dim} must be divisible by model.decoder.heads={heads}")
        self.heads, self.head_dim, self.rope, self.window = heads, dim // heads, rope, window
        if rope and self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head size, got dim/heads = {self.head_dim}")
        self.kernel = get_attention(kernel)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, rope, key_padding_mask, cache: dict | None = None, doc_ids=None):
        """x (B, Tq, D); ``cache`` holds this layer's past ``k``, ``v`` (B, H, Tpast, Dh) and is extended in place.

        With a cache the Tq new queries are the last Tq of the keys: every kernel aligns its causal mask to the
        bottom right (``genrec.attention.masks``), so a one-token decoding step sees the whole cache.
        ``key_padding_mask`` (B, Tpast + Tq) covers all keys; ``doc_ids`` (B, T) separates packed sequences.
        """
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, Dh)
        if self.rope:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if isinstance(cache, HistoryBeamCache):  # beam search over a shared history (decoding, Tq = 1)
            out = cache.attend(q, k, v)
            return self.drop(self.proj(out.transpose(1, 2).reshape(b, t, d)))
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        out = self.kernel(q, k, v, causal=True, window=self.window, key_padding_mask=key_padding_mask, doc_ids=doc_ids)
        return self.drop(self.proj(out.transpose(1, 2).reshape(b, t, d)))


SOFTMAX_KERNELS = ("eager", "sdpa", "flash", "flex")  # one mathematics (softmax attention), one decoding path
# How a new token's weights over the keys it may see are formed, per kernel family (see HistoryBeamCache.attend).
BEAM_CACHE_KINDS = {**{name: "softmax" for name in SOFTMAX_KERNELS}, "hstu": "hstu", "linear": "linear"}


def beam_cache_kind(kernel) -> str | None:
    """The ``BEAM_CACHE_KINDS`` family of a kernel function, or None for a kernel registered elsewhere."""
    return next((kind for name, kind in BEAM_CACHE_KINDS.items() if get_attention(name) is kernel), None)


class HistoryBeamCache:
    """One layer's KV cache for beam search: the history once per user, the generated tokens once per beam.

    Beam rows are batch-major (row r belongs to user r // W). The history's keys and values stay at B rows
    (B, H, T, Dh) and never move; only the at most L generated tokens are kept per beam row (B * W, H, s, Dh) and
    reordered by ``parent``. A beam's query scores its user's history and its own tokens and combines them as its
    kernel does, exactly what the gathered cache computes, without W copies of the history (and their reorder at
    every level): 250 beams over 801-token histories (configs/gr/ml-1m.yaml under HSTU's protocol) would hold
    3 GB per key tensor as copies (benchmarks/bench_beam_cache.py). ``kind`` is the kernel's family:

      softmax  softmax(q k / sqrt(Dh)) over the visible keys (eager, sdpa, flash, flex)
      hstu     SiLU(q k / sqrt(Dh)) / n, n = the number of visible keys (``genrec.attention.hstu``)
      linear   phi(q) phi(k) / (sum of those + eps), phi = elu + 1 (``genrec.attention.linear``)

    ``window`` > 0 keeps the ``window`` most recent keys (the query's own token included), as the kernels do.
    """

    def __init__(self, k: torch.Tensor, v: torch.Tensor, pad: torch.Tensor | None, kind: str = "softmax",
                 window: int = 0):
        if kind not in ("softmax", "hstu", "linear"):
            raise ValueError(f"HistoryBeamCache kind={kind!r}: expected 'softmax', 'hstu' or 'linear'")
        if kind == "linear" and window:
            raise ValueError(f"linear attention has no sliding window (got window={window})")
        self.kind, self.window = kind, window
        self.k, self.v, self.pad = k, v, pad  # (B, H, T, Dh) x 2, (B, T) True = padding or None
        self.k_new: torch.Tensor | None = None
        self.v_new: torch.Tensor | None = None

    def reorder(self, parent: torch.Tensor) -> None:
        """Keep the generated tokens of each new beam's parent row (the history needs no reorder)."""
        if self.k_new is not None:
            self.k_new, self.v_new = self.k_new.index_select(0, parent), self.v_new.index_select(0, parent)

    def _visible(self, t: int, s: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(B or 1, 1, 1, T) history keys and (s,) own keys the newest token may see (padding, window)."""
        old = torch.ones(1, t, dtype=torch.bool, device=device) if self.pad is None else ~self.pad
        new = torch.ones(s, dtype=torch.bool, device=device)
        if self.window:  # the query is key t + s - 1 of the full row; key j is seen when t + s - 1 - j < window
            old = old & (torch.arange(t, device=device) > t + s - 1 - self.window)
            new = new & (torch.arange(s, device=device) > s - 1 - self.window)
        return old[:, None, None, :], new

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v (R, H, 1, Dh) of each beam's new token; appends k, v; returns (R, H, 1, Dh) in v's dtype.

        The cache keeps the dtype it is given (bf16 under autocast); scores and weights are formed in float32,
        as sdpa, flash and flex do inside their kernels, so a bf16 evaluation ranks beams on unrounded scores.
        """
        self.k_new = k if self.k_new is None else torch.cat([self.k_new, k], dim=2)
        self.v_new = v if self.v_new is None else torch.cat([self.v_new, v], dim=2)
        (b, h, t, dh), r = self.k.shape, q.shape[0]
        w, s = r // b, self.k_new.shape[2]
        scale = 1.0 if self.kind == "linear" else 1.0 / math.sqrt(dh)
        with torch.autocast(q.device.type, enabled=False):
            qb = q.float().reshape(b, w, h, dh).transpose(1, 2)  # (B, H, W, Dh): a user's beams query their history
            k_old = self.k.float()
            k_new = self.k_new.float().reshape(b, w, h, s, dh).transpose(1, 2)  # (B, H, W, s, Dh)
            if self.kind == "linear":  # phi(q) . phi(k) in place of q . k
                qb, k_old, k_new = linear_features(qb), linear_features(k_old), linear_features(k_new)
            old = torch.matmul(qb, k_old.transpose(-2, -1)) * scale  # (B, H, W, T)
            v_new = self.v_new.float().reshape(b, w, h, s, dh).transpose(1, 2)
            new = torch.matmul(qb.unsqueeze(-2), k_new.transpose(-2, -1)).squeeze(-2) * scale  # (B, H, W, s)
            see_old, see_new = self._visible(t, s, old.device)
            if self.kind == "softmax":  # a finite fill, as the eager kernel; a beam always sees its own token
                fill = torch.finfo(old.dtype).min
                a = torch.cat([old.masked_fill(~see_old, fill), new.masked_fill(~see_new, fill)], -1).softmax(-1)
            elif self.kind == "hstu":
                a = torch.cat([F.silu(old) * see_old, F.silu(new) * see_new], dim=-1)
            else:
                a = torch.cat([old * see_old, new * see_new], dim=-1)
            out = torch.matmul(a[..., :t], self.v.float())  # (B, H, W, Dh)
            out = out + torch.matmul(a[..., t:].unsqueeze(-2), v_new).squeeze(-2)
            if self.kind == "hstu":  # divided by the number of keys seen, as genrec.attention.hstu
                out = out / (see_old.sum(-1, keepdim=True) + see_new.sum()).clamp(min=1)
            elif self.kind == "linear":  # normalised by the summed weights, as genrec.attention.linear
                out = out / (a.sum(-1, keepdim=True) + LINEAR_EPS)
        return out.to(v.dtype).transpose(1, 2).reshape(r, h, 1, dh)


class MLP(nn.Module):
    def __init__(self, dim: int, kind: str, ratio: float, dropout: float):
        super().__init__()
        self.kind = kind
        if kind == "swiglu":  # 2/3 of the hidden size keeps the parameter count of a GELU MLP (Llama)
            hidden = int(ratio * dim * 2 / 3)
            self.up = nn.Linear(dim, 2 * hidden, bias=False)
        elif kind == "gelu":
            hidden = int(ratio * dim)
            self.up = nn.Linear(dim, hidden, bias=False)
        else:
            raise ValueError(f"model.decoder.mlp={kind!r} is not one of ['gelu', 'swiglu']")
        self.down = nn.Linear(hidden, dim, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        h = self.up(x)
        if self.kind == "swiglu":
            gate, h = h.chunk(2, dim=-1)
            h = F.silu(gate) * h
        else:
            h = F.gelu(h)
        return self.drop(self.down(h))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dcfg, kernel: str):
        super().__init__()
        self.norm1, self.norm2 = nn.RMSNorm(dcfg.dim), nn.RMSNorm(dcfg.dim)
        self.attn = Attention(dcfg.dim, dcfg.heads, kernel, dcfg.positions == "rope", dcfg.window, dcfg.dropout)
        self.mlp = MLP(dcfg.dim, dcfg.mlp, dcfg.mlp_ratio, dcfg.dropout)

    def forward(self, x, rope, key_padding_mask, cache=None, doc_ids=None):
        x = x + self.attn(self.norm1(x), rope, key_padding_mask, cache, doc_ids)
        return x + self.mlp(self.norm2(x))


# ------------------------------------------------------------------------------------------------- model
LOSS_ON = {"target": "target", "all": "all"}


class DecoderRecommender(SidModel):
    """Causal transformer over semantic-ID tokens (``example_mode = "next_item"``).

    Args:
        dcfg: ``DecoderConfig``.
        attention: key of ``genrec.attention.ATTENTION``.
        sid_codes: (N + 1, L) long codes, row i = item i (row 0 = padding).
        codebook_sizes: K_l per level.
        max_history: history items per example (sets the learned-position table size).
        beam_size: beams for ``recommend`` (at least k are used).
    """

    example_mode = "next_item"

    def __init__(self, dcfg, attention: str, sid_codes: torch.Tensor, codebook_sizes: list[int], max_history: int,
                 beam_size: int = 20):
        super().__init__()
        self.vocab = SidVocab(sid_codes, codebook_sizes, NUM_SPECIAL, dcfg.num_user_tokens, owner="model.kind='decoder'")
        lookup(LOSS_ON, dcfg.loss_on, field="model.decoder.loss_on")
        lookup({"rope": 1, "learned": 1}, dcfg.positions, field="model.decoder.positions")
        if dcfg.prefix_output and not dcfg.prefix_embedding:
            raise ValueError("model.decoder.prefix_output=true scores with the prefix rows: set "
                             "model.decoder.prefix_embedding=true too")
        if dcfg.pack and attention == "linear":
            raise ValueError("model.attention='linear' cannot separate packed sequences (no doc_ids): "
                             "set model.decoder.pack=false")
        self.dcfg, self.loss_on = dcfg, dcfg.loss_on
        self.num_user_tokens, self.beam_size = int(dcfg.num_user_tokens), int(beam_size)
        self.max_positions = 2 + (max_history + 1) * self.num_levels

        self.embed = nn.Embedding(self.vocab_size, dcfg.dim)
        if dcfg.prefix_buckets < 0 or (dcfg.prefix_buckets and not dcfg.prefix_embedding):
            raise ValueError(f"model.decoder.prefix_buckets={dcfg.prefix_buckets}: expected 0 (one row per prefix) or "
                             f"a positive number of rows with model.decoder.prefix_embedding=true")
        rows = min(dcfg.prefix_buckets or self.vocab.num_prefixes, self.vocab.num_prefixes)
        self.prefix_embed = nn.Embedding(rows + 1, dcfg.dim, padding_idx=0) if dcfg.prefix_embedding else None
        self.pos = nn.Embedding(self.max_positions, dcfg.dim) if dcfg.positions == "learned" else None
        self.drop = nn.Dropout(dcfg.dropout)
        self.blocks = nn.ModuleList(Block(dcfg, attention) for _ in range(dcfg.layers))
        self.norm = nn.RMSNorm(dcfg.dim)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * dcfg.layers))
        if self.prefix_embed is not None:
            with torch.no_grad():
                self.prefix_embed.weight[0].zero_()  # id 0 (no prefix row) adds nothing
        if dcfg.prefix_output:
            self.vocab.trie()  # the training step walks it: build it here, not inside a (compiled) forward

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    @classmethod
    def from_config(cls, cfg, ctx: ModelContext) -> "DecoderRecommender":
        return cls(cfg.model.decoder, cfg.model.attention, ctx.sid_codes, ctx.codebook_sizes,
                   max_history=cfg.data.max_history, beam_size=cfg.eval.beam_size)

    def train_dataset(self, split, ctx=None):
        return UserSequenceDataset(split) if self.loss_on == "all" else NextItemDataset(split)

    # ------------------------------------------------------------------------------------------ inputs
    def tokens(self, batch: dict[str, torch.Tensor], with_target: bool,
               on_cpu: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Right-aligned tokens ``[pad..., bos, user, history codes..., (target codes)]``: (B, S), trimmed, and
        the prefix id of each token (B, S) (0 for bos, user and padding) with ``prefix_embedding``, else None.

        ``on_cpu``: read the vocabulary's CPU copy of the codes (``collate`` runs before batches reach the device).
        """
        items = batch["history"]  # (B, T) left-padded
        if with_target:
            items = torch.cat([items, batch["target"][:, None]], dim=1)
        b, t = items.shape
        seq = self.vocab.item_tokens(items, pad=PAD, on_cpu=on_cpu).view(b, t * self.num_levels)
        head = [torch.full((b, 1), BOS, dtype=torch.long, device=seq.device)]
        if self.num_user_tokens > 0:
            head.append(self.vocab.user_tokens(batch["user"].to(seq.device))[:, None])
        seq = torch.cat(head + [seq], dim=1)
        order = torch.argsort((seq != PAD).to(torch.int8), dim=1, stable=True)  # pads first, order kept
        seq = seq.gather(1, order)
        pids = None
        if self.prefix_embed is not None:
            pids = self.vocab.prefix_ids(items, on_cpu=on_cpu).view(b, t * self.num_levels)
            pids = torch.cat([torch.zeros(b, len(head), dtype=torch.long, device=seq.device), pids], dim=1)
            pids = pids.gather(1, order)
        if self.static_shapes:
            return seq, pids
        n = int((seq != PAD).sum(1).max())
        return seq[:, -n:], None if pids is None else pids[:, -n:]

    def _run(self, tokens, positions, key_padding_mask, caches=None, doc_ids=None, prefix_ids=None):
        x = self.embed(tokens)
        if prefix_ids is not None:
            x = x + self.prefix_embed(self._prefix_rows(prefix_ids))
        if self.pos is not None:
            x = x + self.pos(positions.clamp(max=self.max_positions - 1))
        rope = rope_cos_sin(positions, self.dcfg.dim // self.dcfg.heads) if self.dcfg.positions == "rope" else None
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, key_padding_mask, None if caches is None else caches[i], doc_ids)
        return self.norm(x)

    def _prefix_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """The ``prefix_embed`` row of each prefix id: the id itself, or with ``prefix_buckets`` B the row
        1 + (id - 1) mod B (0, no prefix, stays 0)."""
        b = self.dcfg.prefix_buckets
        return ids if not b else torch.where(ids > 0, (ids - 1) % b + 1, 0)

    def hidden(self, seq: torch.Tensor, caches=None, prefix_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states (B, S, D) of right-aligned tokens (B, S) and their prefix ids (``tokens``)."""
        pad = seq == PAD
        positions = ((~pad).long().cumsum(1) - 1).clamp(min=0)
        keep = self.static_shapes or bool(pad.any())  # (an unmasked batch takes sdpa's is_causal fast path)
        return self._run(seq, positions, pad if keep else None, caches, prefix_ids=prefix_ids)

    def level_log_probs(self, h: torch.Tensor, level: int, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """(..., D) hidden states -> (..., K_level) log-probs over that level's codes (tied output embedding).

        With ``prefix_output`` and level >= 1, ``prefix`` (..., level) holds the item's codes before this level, and
        code c scores ``h . code row + h . row of the prefix it completes`` (0 for a code that completes none).
        """
        lo = self.offsets_list[level]
        w = self.embed.weight[lo : lo + self.codebook_sizes[level]]
        logits = h @ w.t()
        if self.dcfg.prefix_output and level > 0:
            logits = logits + self._prefix_scores(h, prefix)
        return F.log_softmax(logits.float(), dim=-1)

    def _prefix_scores(self, h: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """(..., D), (..., l) -> (..., K_l): h . row of each one-code extension of the prefix (0 where none).

        One matmul against the rows of all prefixes of l + 1 codes (at most N; with ``prefix_buckets`` the B rows),
        then a gather of each row's children: (n, N) scores instead of an (n, K_l, D) gather of rows.
        """
        d, m = h.shape[-1], prefix.shape[-1]
        ids = self.vocab.child_prefix_ids(prefix.reshape(-1, m))  # (n, K_l)
        if self.dcfg.prefix_buckets:  # against the B rows (n, B), whichever prefixes they hold
            rows, local = self.prefix_embed.weight[1:], self._prefix_rows(ids)
        else:
            block = self.vocab.prefix_block(m + 1)
            rows, local = self.prefix_embed.weight[block], torch.where(ids > 0, ids - block.start + 1, 0)
        scores = F.pad(h.reshape(-1, d) @ rows.t(), (1, 0))  # column 0: no prefix
        return scores.gather(1, local).view(*h.shape[:-1], -1)

    # ------------------------------------------------------------------------------------------ training
    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        """Teacher-forced cross-entropy on item codes.

        Args:
            batch: ``user`` (B,), ``history`` (B, T) left-padded item ids, ``target`` (B,) item ids; or a packed
                batch from ``collate`` (``tokens``, ``positions``, ``doc_ids``, ``levels``), the same loss.

        Returns:
            Output(loss: mean cross-entropy over the scored codes (the target's L codes, or with
            ``loss_on="all"`` every item's codes), logits: (B, L, max K) log-probs of the target's levels,
            -inf beyond K_l).
        """
        if "tokens" in batch:
            return self._packed_forward(batch)
        seq, pids = self.tokens(batch, with_target=True)  # (B, S) x 2
        h = self.hidden(seq, prefix_ids=pids)  # (B, S, D)
        s, L = seq.shape[1], self.num_levels
        items = s if self.loss_on == "all" else 1  # item slots scored, counted from the end
        total, count = 0.0, 0  # count stays a tensor: no host sync in the step
        logits = h.new_full((seq.shape[0], L, max(self.codebook_sizes)), -math.inf, dtype=torch.float)
        for l in range(L):
            cols = torch.arange(s - L + l, -1, -L, device=seq.device)[:items]  # columns of level-l codes
            cols = cols[cols >= 1]
            prefix = None
            if self.dcfg.prefix_output and l > 0:  # the item's codes before level l: (B, n, l)
                prefix = torch.stack([seq[:, (cols - l + j).clamp(min=0)] - self.offsets_list[j] for j in range(l)], -1)
            logp = self.level_log_probs(h[:, cols - 1], l, prefix)  # (B, n, K_l): the token before predicts the code
            tgt = seq[:, cols] - self.offsets_list[l]
            valid = (seq[:, cols] >= self.offsets_list[0]) & (tgt >= 0) & (tgt < self.codebook_sizes[l])
            nll = -logp.gather(-1, tgt.clamp(min=0)[..., None]).squeeze(-1)
            total = total + (nll * valid).sum()
            count = count + valid.sum()
            logits[:, l, : self.codebook_sizes[l]] = logp[:, 0]
        return Output(loss=total / count.clamp(min=1), logits=logits)

    # ------------------------------------------------------------------------------------------ packing
    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """Training batches: with ``model.decoder.pack`` the users' token sequences are packed into rows.

        Sequences are placed first-fit decreasing into rows of ``max_positions`` tokens; ``doc_ids`` keeps each
        sequence's attention to itself (a block-diagonal causal mask) and positions restart at 0 for each
        sequence, so the loss equals the padded batch's while most padding (Beauty: sequences average about a
        third of the longest) is never computed. ``levels`` (rows, R) gives, for each position, the level of the
        code it predicts (the next token), or -1 where nothing is scored.
        """
        from ..data import collate
        from ..data.packing import first_fit_decreasing

        batch = collate(examples)
        if not self.dcfg.pack:
            return batch
        seq, pids = self.tokens(batch, with_target=True, on_cpu=True)  # (B, S) right-aligned
        lengths = (seq != PAD).sum(1).tolist()
        s, r, L = seq.shape[1], self.max_positions, self.num_levels
        col = torch.arange(s)
        level = (col - s) % L  # level of a code at column c (codes are right-aligned in L-blocks)
        scored = seq >= self.offsets_list[0]
        if self.loss_on == "target":
            scored = scored & (col >= s - L)
        rows = first_fit_decreasing(lengths, r)
        n = len(rows)
        tokens = torch.zeros(n, r, dtype=torch.long)
        positions = torch.zeros(n, r, dtype=torch.long)
        doc_ids = torch.full((n, r), -1, dtype=torch.long)
        levels = torch.full((n, r), -1, dtype=torch.long)
        prefix_ids = None if pids is None else torch.zeros(n, r, dtype=torch.long)
        for j, members in enumerate(rows):
            at = 0
            for i in members:
                ln = lengths[i]
                tokens[j, at : at + ln] = seq[i, s - ln :]
                if prefix_ids is not None:
                    prefix_ids[j, at : at + ln] = pids[i, s - ln :]
                positions[j, at : at + ln] = torch.arange(ln)
                doc_ids[j, at : at + ln] = i
                tgt = torch.where(scored[i, s - ln :], level[s - ln :], -1)  # level of each scored token
                levels[j, at : at + ln - 1] = tgt[1:]  # token t predicts token t + 1 of the same sequence
                at += ln
        used = int((doc_ids >= 0).sum(0).nonzero().max()) + 1 if n else 1
        sl = slice(0, used)
        out = {"tokens": tokens[:, sl], "positions": positions[:, sl], "doc_ids": doc_ids[:, sl],
               "levels": levels[:, sl]}
        if prefix_ids is not None:
            out["prefix_ids"] = prefix_ids[:, sl]
        return out

    def _packed_forward(self, batch: dict[str, torch.Tensor]) -> Output:
        tokens, levels = batch["tokens"], batch["levels"]
        h = self._run(tokens, batch["positions"], None, doc_ids=batch["doc_ids"],
                      prefix_ids=batch.get("prefix_ids"))  # (rows, R, D)
        nxt = torch.roll(tokens, -1, dims=1)
        total, count = 0.0, 0
        for l in range(self.num_levels):
            sel = levels == l
            if not bool(sel.any()):
                continue
            prefix = None
            if self.dcfg.prefix_output and l > 0:  # the item's codes before level l end at the predicting token
                prefix = torch.stack([torch.roll(tokens, l - 1 - j, dims=1)[sel] - self.offsets_list[j]
                                      for j in range(l)], -1)
            logp = self.level_log_probs(h[sel], l, prefix)  # (n, K_l)
            total = total - logp.gather(1, (nxt[sel] - self.offsets_list[l])[:, None]).sum()
            count += int(sel.sum())
        return Output(loss=total / max(count, 1), logits=None)

    def target_log_probs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, L) log-probs of the target's codes from one full forward pass (the oracle of cached decoding)."""
        logits = self.forward(batch).logits
        codes = self.sid_codes[batch["target"]]
        return logits.gather(-1, codes[..., None]).squeeze(-1)

    # ---------------------------------------------------------------------------------------- generation
    def shares_history(self) -> bool:
        """Whether beam search can share each user's history cache: every block runs a kernel of a family
        ``HistoryBeamCache`` computes (softmax, hstu, linear; read from the blocks, so a kernel swapped after
        construction decides too). A kernel registered elsewhere decodes through the gathered cache."""
        return all(beam_cache_kind(blk.attn.kernel) is not None for blk in self.blocks)

    def make_step_fn(self, batch: dict[str, torch.Tensor], share_history: bool | None = None):
        """A ``step_fn(level, prefix, parent) -> (R, K_level)`` for ``constrained_beam_search`` on this batch.

        The history runs once, through the cache, with B rows. Decoding rows are (batch, beam) batch-major. Each
        step feeds the code chosen at the previous level as one new token at the row's next position; its query
        sees the whole cache (bottom-right causal alignment).

        ``share_history`` (default: ``shares_history()``, every built-in kernel): the history's cache stays at one
        row per user and only the generated tokens are kept per beam (``HistoryBeamCache``). Otherwise at level 1
        the cache of user r // W is gathered for row r (``parent // W``) and later levels gather by ``parent``:
        W copies of the history, the general path any kernel runs and the oracle of the shared one.
        """
        if share_history is None:
            share_history = self.shares_history()
        seq, pids = self.tokens(batch, with_target=False)
        b = seq.shape[0]
        pad = seq == PAD
        caches = [{} for _ in self.blocks]
        h = self.hidden(seq, caches, pids)[:, -1]  # (B, D)
        first = self.level_log_probs(h, 0)  # (B, K_0)
        if share_history:
            caches = [HistoryBeamCache(c["k"], c["v"], pad if pad.any() else None, beam_cache_kind(blk.attn.kernel),
                                       blk.attn.window) for c, blk in zip(caches, self.blocks)]
        state = {"caches": caches, "pad": pad, "pos": (~pad).sum(1) - 1}

        def step_fn(level: int, prefix: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
            r = parent.shape[0]
            w = r // b
            if level == 0:
                return first.repeat_interleave(w, dim=0)
            idx = parent // w if level == 1 else parent  # level 1: from users' rows to beams' rows
            state["pos"] = state["pos"][idx] + 1
            tok = prefix[:, -1:] + self.offsets_list[level - 1]  # (R, 1)
            if share_history:
                if level > 1:
                    for c in state["caches"]:
                        c.reorder(parent)
                kpm = None  # the history's padding is the cache's own mask
            else:
                for c in state["caches"]:
                    c["k"], c["v"] = c["k"].index_select(0, idx), c["v"].index_select(0, idx)
                state["pad"] = torch.cat([state["pad"][idx], torch.zeros_like(tok, dtype=torch.bool)], dim=1)
                kpm = state["pad"] if state["pad"].any() else None
            pid = None if self.prefix_embed is None else self.vocab.prefix_of(prefix)[:, None]  # the fed code's prefix
            hid = self._run(tok, state["pos"][:, None], kpm, state["caches"], prefix_ids=pid)[:, -1]
            return self.level_log_probs(hid, level, prefix)

        return step_fn

    @torch.no_grad()
    def recommend(self, batch: dict[str, torch.Tensor], k: int, beam_size: int | None = None):
        """Top-k distinct items by trie-constrained beam search with ``max(beam_size, k)`` beams.

        Returns:
            items (B, k) long (0 where fewer valid items exist), scores (B, k) summed log-probs, best first.
        """
        from ..generation import constrained_beam_search

        w = max(beam_size or self.beam_size, k)
        out = constrained_beam_search(self.make_step_fn(batch), self.trie(), batch_size=batch["history"].shape[0],
                                      beam_size=w, device=self.sid_codes.device, num_return=k)
        return out.items, out.scores
