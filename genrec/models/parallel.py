"""Item-level parallel semantic-ID decoder with exact full-catalog scoring.

RPG (Hou et al., KDD 2025, "Generating Long Semantic IDs in Parallel for Recommendation"): each position of the
sequence is one ITEM, its input the pooled embedding of its L codes; from the hidden state at the last position,
one small head per code level predicts all L codes of the next item at once. Sequences are L times shorter than in
the token-level models (TIGER, decoder-only), training is SASRec's (a loss at every position of a user's window),
and with long IDs (L = 16 .. 64 product-quantised codes) the catalog is covered by few shared code vectors.

Scoring. Level l gives ``log p_l(c)`` over its K_l codes; an item's score is ``sum_l log p_l(code_l(item))``, a
gather over the (N, L) code table (``SidVocab.item_scores``), so every item is ranked exactly (``topk=exact``) by
the common evaluator, with ``eval.exclude_history`` working as for SASRec. ``topk=beam`` ranks by trie beam search
over the same per-level log-probs instead (approximate unless the beam covers the catalog), for catalogs too
large to score item by item.

Vocabulary: ``SidVocab`` with no special or user tokens, so code tokens are 0 .. sum(K)-1; one embedding table
holds them, read by the input pooling and (tied) by the output heads.

Layout: batches arrive left-padded (``genrec.data``); rows are re-aligned to start at column 0 (padding at the end),
so causal attention never lets a real item see padding, no padding mask is needed, every attention kernel runs
its plain causal path, and an item's position is its column. With ``num_user_tokens`` a hashed user token takes
column 0.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import lookup
from .base import ModelContext, Output
from .decoder import Block, rope_cos_sin
from .vocab import SidModel, SidVocab, hash_user


class LevelHeads(nn.Module):
    """One residual head per level, ``q_l = x + SiLU(W_l x + b_l)``, W_l zero at init (each query starts as the
    shared hidden state; RPG's heads). The L heads run as one batched matmul rather than L small ones."""

    def __init__(self, levels: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(levels, dim, dim))  # (L, D_in, D_out)
        self.bias = nn.Parameter(torch.zeros(levels, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(P, D) -> (L, P, D) queries."""
        return x + F.silu(torch.matmul(x, self.weight) + self.bias)


POOLING = ("mean", "sum", "attention")
LOSSES = ("level", "item")
HEADS = ("dot", "cosine")
TOPK = ("exact", "beam")


class ParallelSidModel(SidModel):
    """Causal transformer over items (pooled code embeddings) with one code head per level.

    Args:
        pcfg: ``ParallelConfig``.
        attention: key of ``genrec.attention.ATTENTION``.
        sid_codes: (N + 1, L) codes, row 0 padding.
        codebook_sizes: K_l per level.
        max_history: items per training window (sets the learned-position table).
        beam_size: beams for ``topk=beam``.
    """

    example_mode = "sequence"

    def __init__(self, pcfg, attention: str, sid_codes: torch.Tensor, codebook_sizes: list[int], max_history: int,
                 beam_size: int = 20):
        super().__init__()
        lookup(dict.fromkeys(POOLING), pcfg.pooling, field="model.parallel.pooling")
        lookup(dict.fromkeys(HEADS), pcfg.head, field="model.parallel.head")
        lookup(dict.fromkeys(TOPK), pcfg.topk, field="model.parallel.topk")
        lookup(dict.fromkeys(LOSSES), pcfg.loss, field="model.parallel.loss")
        lookup(dict.fromkeys(("learned", "rope")), pcfg.positions, field="model.parallel.positions")
        if pcfg.head == "cosine" and pcfg.temperature <= 0:
            raise ValueError(f"model.parallel.temperature={pcfg.temperature} must be > 0 with head=cosine")
        self.pcfg = pcfg
        self.vocab = SidVocab(sid_codes, codebook_sizes, owner="model.kind='parallel'")
        self.beam_size = int(beam_size)
        self.ranking = "score" if pcfg.topk == "exact" else "list"
        d = pcfg.dim
        self.code_emb = nn.Embedding(self.vocab.size, d)  # (sum K, D): code c of level l is row offset_l + c
        self.item_emb = nn.Embedding(self.vocab.num_items + 1, d, padding_idx=0) if pcfg.item_embedding else None
        self.user_emb = nn.Embedding(pcfg.num_user_tokens, d) if pcfg.num_user_tokens > 0 else None
        self.pool_query = nn.Parameter(torch.zeros(d)) if pcfg.pooling == "attention" else None
        self.max_positions = max_history + 1
        self.pos = nn.Embedding(self.max_positions, d) if pcfg.positions == "learned" else None
        self.input_drop = nn.Dropout(pcfg.input_dropout)
        self.blocks = nn.ModuleList(Block(pcfg, attention) for _ in range(pcfg.layers))
        self.norm = nn.RMSNorm(d)
        self.heads = LevelHeads(self.num_levels, d)
        # (L, max K) rows of ``code_emb`` per level, padded with row 0 where K_l < max K (masked in the logits)
        kmax = max(self.codebook_sizes)
        rows = torch.zeros(self.num_levels, kmax, dtype=torch.long)
        for l, k in enumerate(self.codebook_sizes):
            rows[l, :k] = torch.arange(self.vocab.level_slice(l).start, self.vocab.level_slice(l).stop)
        self.register_buffer("level_rows", rows, persistent=False)
        self.register_buffer("level_pad", torch.arange(kmax)[None] >= torch.tensor(self.codebook_sizes)[:, None],
                             persistent=False)  # (L, max K) True on padding columns
        # (N, L) rows of the flattened (L * max K) level logits that hold each item's codes (the item loss)
        self.register_buffer("item_rows", self.vocab.cpu_codes[1:] + torch.arange(self.num_levels) * kmax,
                             persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        for name, p in self.named_parameters():
            if name.startswith("heads.") or p.dim() < 2:  # heads start at the identity (zero W)
                continue
            nn.init.normal_(p, std=0.02)
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):  # GPT-2's scaled residual projections
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * self.pcfg.layers))
        if self.item_emb is not None:
            with torch.no_grad():
                self.item_emb.weight[0].zero_()

    @classmethod
    def from_config(cls, cfg, ctx: ModelContext) -> "ParallelSidModel":
        return cls(cfg.model.parallel, cfg.model.attention, ctx.sid_codes, ctx.codebook_sizes,
                   max_history=cfg.data.max_history, beam_size=cfg.eval.beam_size)

    # ------------------------------------------------------------------------------------------ body
    def item_inputs(self, items: torch.Tensor) -> torch.Tensor:
        """(B, T) item ids -> (B, T, D) pooled code embeddings (+ the item's own embedding when hybrid)."""
        e = self.code_emb(self.vocab.item_tokens(items))  # (B, T, L, D); padding rows are ignored later
        if self.pcfg.pooling == "mean":
            x = e.mean(-2)
        elif self.pcfg.pooling == "sum":
            x = e.sum(-2)
        else:  # attention pooling: one learned query over the L code embeddings of the item
            w = torch.softmax(e @ self.pool_query / math.sqrt(e.shape[-1]), dim=-1)  # (B, T, L)
            x = (w.unsqueeze(-1) * e).sum(-2)
        if self.item_emb is not None:
            x = x + self.item_emb(items)
        return x

    def hidden(self, items: torch.Tensor, user: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states of left-padded item rows.

        Args:
            items: (B, T) item ids, left-padded (0).
            user: (B,) user ids (read when ``num_user_tokens`` > 0).

        Returns:
            h (B, T', D) with rows start-aligned (item j of a row at column j, plus one with a user token),
            and lengths (B,) of real items per row. T' = the longest row (+1).
        """
        lengths = (items > 0).sum(1)
        n = items.shape[1] if self.static_shapes else max(int(lengths.max()), 1)
        # start-align: shift each row left by its padding, then keep the n used columns
        shift = items.shape[1] - lengths
        cols = (torch.arange(n, device=items.device)[None] + shift[:, None]).clamp(max=items.shape[1] - 1)
        aligned = items.gather(1, cols).masked_fill(torch.arange(n, device=items.device)[None] >= lengths[:, None], 0)
        x = self.item_inputs(aligned)  # (B, n, D)
        if self.user_emb is not None:
            x = torch.cat([self.user_emb(hash_user(user, self.pcfg.num_user_tokens))[:, None], x], dim=1)
        t = x.shape[1]
        positions = torch.arange(t, device=x.device)
        if self.pos is not None:
            x = x + self.pos(positions.clamp(max=self.max_positions - 1))[None]
        rope = rope_cos_sin(positions[None], self.pcfg.dim // self.pcfg.heads) if self.pcfg.positions == "rope" else None
        x = self.input_drop(x)
        for block in self.blocks:
            x = block(x, rope, None)
        return self.norm(x), lengths

    def level_logits(self, h: torch.Tensor) -> torch.Tensor:
        """(P, D) hidden states -> (L, P, max K) code logits (before the per-level softmax); -inf on the padding
        columns of levels with fewer than max K codes."""
        q = self.heads(h)  # (L, P, D)
        w = self.code_emb(self.level_rows)  # (L, max K, D), tied to the input table
        if self.pcfg.head == "cosine":
            z = torch.matmul(F.normalize(q, dim=-1), F.normalize(w, dim=-1).transpose(1, 2)) / self.pcfg.temperature
        else:
            z = torch.matmul(q, w.transpose(1, 2))
        return z.masked_fill(self.level_pad[:, None, :], float("-inf"))

    def _last(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, D) hidden state after each user's last history item."""
        h, lengths = self.hidden(batch["history"], batch.get("user"))
        last = lengths - 1 + (1 if self.user_emb is not None else 0)
        return h[torch.arange(h.shape[0], device=h.device), last.clamp(min=0)]

    def level_log_probs(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """L tensors (B, K_l): log-probs of the next item's code at each level.

        The body runs in the caller's precision (autocast); the heads run in fp32 here, so that ranking never
        sees bf16's coarse logits (ties count against the target).
        """
        h = self._last(batch)
        with torch.autocast(h.device.type, enabled=False):
            logp = F.log_softmax(self.level_logits(h.float()), dim=-1)  # (L, B, max K)
        return [logp[l, :, :k] for l, k in enumerate(self.codebook_sizes)]

    # ------------------------------------------------------------------------------------------ training
    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        """Per-level cross-entropy of the next item's codes at every labelled position, averaged over levels.

        Args:
            batch: ``user`` (B,), ``input`` (B, T) left-padded item ids, ``labels`` (B, T) next items (0 = none),
                aligned with ``input`` (``genrec.data.SequenceDataset``).
        """
        items, labels = batch["input"], batch["labels"]
        h, lengths = self.hidden(items, batch.get("user"))
        if self.user_emb is not None:
            h = h[:, 1:]
        n = h.shape[1]
        shift = items.shape[1] - lengths
        cols = (torch.arange(n, device=items.device)[None] + shift[:, None]).clamp(max=items.shape[1] - 1)
        tgt = labels.gather(1, cols).masked_fill(torch.arange(n, device=items.device)[None] >= lengths[:, None], 0)
        mask = tgt > 0
        logits = self.level_logits(h[mask]).float()  # (L, P, max K)
        if self.pcfg.loss == "item":
            return Output(loss=F.cross_entropy(self.item_logits(logits), tgt[mask] - 1))
        codes = self.vocab.codes[tgt[mask]]  # (P, L)
        # the mean over levels of each level's mean cross-entropy = the mean over all (level, position) pairs
        return Output(loss=F.cross_entropy(logits.flatten(0, 1), codes.t().reshape(-1)))

    def item_logits(self, level_logits: torch.Tensor) -> torch.Tensor:
        """(L, P, max K) code logits -> (P, N) item logits, item i's the sum of its L codes' logits.

        A bag-sum over the (L * max K, P) table (``embedding_bag``), not a (P, N, L) gather: linear in N * L * P
        without materialising it. Softmax over these is the joint the exact ranking orders items by.
        """
        L, P, kmax = level_logits.shape
        table = level_logits.permute(0, 2, 1).reshape(L * kmax, P)  # row l * max K + c
        return F.embedding_bag(self.item_rows, table, mode="sum").t()

    # ------------------------------------------------------------------------------------------ ranking
    @torch.no_grad()
    def score(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, N + 1) exact scores: ``sum_l log p_l(code_l(item))``; column 0 (padding) is -inf."""
        return self.vocab.item_scores(self.level_log_probs(batch), chunk=self.pcfg.score_chunk)

    @torch.no_grad()
    def recommend(self, batch: dict[str, torch.Tensor], k: int, beam_size: int | None = None):
        """Top-k items by trie beam search over the per-level log-probs (``max(beam_size, k)`` beams).

        Levels are conditionally independent given the history, so each step only adds the level's log-prob of
        the chosen code; the trie keeps paths to real items. Equals the exact top-k once the beam covers every
        item sharing a prefix with the top k (in particular when beam >= N).
        """
        from ..generation import constrained_beam_search

        logp = self.level_log_probs(batch)
        b = logp[0].shape[0]
        w = max(beam_size or self.beam_size, k)

        def step_fn(level: int, prefix: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
            return logp[level].repeat_interleave(prefix.shape[0] // b, dim=0)

        out = constrained_beam_search(step_fn, self.trie(), batch_size=b, beam_size=w,
                                      device=logp[0].device, num_return=k)
        return out.items, out.scores


__all__ = ["ParallelSidModel"]
