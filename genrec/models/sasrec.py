"""SASRec: self-attentive sequential recommendation over item IDs (Kang & McAuley, ICDM 2018).

The ID-based reference for every generative model here, trained and evaluated on the same splits with the same
evaluator. Loss ``ce`` is full-softmax cross-entropy over the catalog at every position, which is what makes
SASRec strong on the Amazon benchmarks (Klenitskiy & Vasilev, RecSys 2023: "Turning Dross Into Gold Loss");
``bce`` is the original one-positive / sampled-negative binary loss; ``sampled`` is the sampled softmax of HSTU's
recipe (``genrec.models.losses``). With ``l2_norm`` the sequence state and the item embeddings are L2-normalised
(eps 1e-6) and compared by cosine over ``temperature``, as HSTU's SASRec baseline (``user_embedding_norm = l2_norm``,
``item_l2_norm = True``, temperature 0.05); every loss and the scores use the same logits.

Sequences are left-padded. As in the original code (Kang & McAuley; padded inputs zeroed, a causal mask only), a
real position also attends to the padding before it, and absolute positions count back from the newest item.
``mask_padding`` masks the padded keys and counts positions from the oldest item of the window instead: what the
right-padded rows of HSTU's SASRec baseline compute, and a user's states then no longer depend on how much padding
precedes the history. ``reference`` (``model.sasrec.reference_details``) takes that baseline's remaining details
(research/modeling/sequential/sasrec.py): layer norms without scale or shift, no final layer norm before the L2
norm, and its initialisation (``_init_reference``).

``attention`` picks how a block attends: ``mha`` (default) is ``torch.nn.MultiheadAttention``, with dropout on the
attention weights, as the original; any key of ``genrec.attention.ATTENTION`` (sdpa, eager, flex, linear, hstu, ...)
runs that kernel on the same projections (the same parameters: a checkpoint loads either way), with ``window`` > 0
limiting each position to its ``window`` most recent items. Kernels are pure functions without attention dropout,
so ``sdpa`` equals ``mha`` in evaluation and differs from it in training only by that dropout.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attention import get_attention
from ..config import lookup
from .base import ModelContext, Output, Recommender


class SASRecBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float, affine: bool = True, attention: str = "mha",
                 window: int = 0):
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden, eps=1e-8, elementwise_affine=affine)
        self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.kernel = None if attention == "mha" else get_attention(attention, field="model.sasrec.attention")
        self.heads, self.window = heads, window
        self.ln2 = nn.LayerNorm(hidden, eps=1e-8, elementwise_affine=affine)
        self.ff = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden),
                                nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, causal: torch.Tensor, pad: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``causal`` is MultiheadAttention's mask; a kernel reads ``key_padding_mask`` (True = padding, or None:
        padding visible) and builds its causal (and window) mask itself."""
        q = self.ln1(x)  # pre-norm on the query, as in the reference implementation
        if self.kernel is None:
            x = q + self.attn(q, x, x, attn_mask=causal, need_weights=False)[0]
        else:
            x = q + self._kernel_attention(q, x, key_padding_mask)
        x = self.ln2(x)
        x = x + self.ff(x)
        return x.masked_fill(pad[..., None], 0.0)

    def _kernel_attention(self, q_in: torch.Tensor, kv_in: torch.Tensor, key_padding_mask) -> torch.Tensor:
        """MultiheadAttention's projections around a ``genrec.attention`` kernel: (B, T, D) -> (B, T, D)."""
        b, t, d = q_in.shape
        w, bias = self.attn.in_proj_weight.chunk(3), self.attn.in_proj_bias.chunk(3)
        q, k, v = (F.linear(x, w_i, b_i).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for x, w_i, b_i in zip((q_in, kv_in, kv_in), w, bias))  # 3 x (B, H, T, Dh)
        out = self.kernel(q, k, v, causal=True, window=self.window, key_padding_mask=key_padding_mask)
        return self.attn.out_proj(out.transpose(1, 2).reshape(b, t, d))


def ce_loss(model: "SASRec", h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Full softmax over all N items at every non-padded position."""
    mask = labels > 0
    logits = h[mask] @ model.item_table()[1:].T / model.temperature  # (P, N)
    return F.cross_entropy(logits.float(), labels[mask] - 1)


def bce_loss(model: "SASRec", h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary loss on the positive and ``num_negatives`` uniformly sampled items per position."""
    mask = labels > 0
    h, pos = h[mask], labels[mask]
    neg = torch.randint(1, model.num_items + 1, (pos.shape[0], model.num_negatives), device=h.device)
    table = model.item_table()
    pos_logit = (h * table[pos]).sum(-1) / model.temperature
    neg_logit = (h[:, None] * table[neg]).sum(-1) / model.temperature
    return F.binary_cross_entropy_with_logits(pos_logit.float(), torch.ones_like(pos_logit.float())) + \
        F.binary_cross_entropy_with_logits(neg_logit.float(), torch.zeros_like(neg_logit.float()))


def sampled_loss(model: "SASRec", h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sampled softmax: the positive against ``num_negatives`` uniform negatives per position (HSTU's recipe)."""
    from .losses import item_loss

    return item_loss("sampled", h, labels, model.item_table(), model.temperature, model.num_negatives,
                     model.negatives)


LOSSES = {"ce": ce_loss, "bce": bce_loss, "sampled": sampled_loss}
WINDOWLESS = ("mha", "linear")  # model.sasrec.attention values that cannot take model.sasrec.window


class SASRec(Recommender):
    example_mode = "sequence"

    def __init__(self, num_items: int, max_len: int, hidden: int = 64, layers: int = 2, heads: int = 1,
                 dropout: float = 0.5, loss: str = "ce", num_negatives: int = 1, temperature: float = 1.0,
                 negatives: str = "position", l2_norm: bool = False, mask_padding: bool = False,
                 reference: bool = False, attention: str = "mha", window: int = 0):
        super().__init__()
        self.num_items, self.num_negatives, self.temperature = num_items, num_negatives, temperature
        self.negatives, self.l2_norm, self.mask_padding, self.heads = negatives, l2_norm, mask_padding, heads
        self.loss_fn = lookup(LOSSES, loss, field="model.sasrec.loss")
        self.item_emb = nn.Embedding(num_items + 1, hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, hidden)
        self.drop = nn.Dropout(dropout)
        if window and attention in WINDOWLESS:
            raise ValueError(f"model.sasrec.window={window} needs a kernel with a window (model.sasrec.attention="
                             f"sdpa, flex, eager, hstu); {attention!r} has none")
        self.blocks = nn.ModuleList(SASRecBlock(hidden, heads, dropout, not reference, attention, window)
                                    for _ in range(layers))
        self.ln = nn.Identity() if reference else nn.LayerNorm(hidden, eps=1e-8)
        self.hidden = hidden
        if reference:
            self._init_reference()
        else:
            self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.xavier_normal_(m.weight)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def _init_reference(self) -> None:
        """HSTU's research code: Xavier-normal on every weight matrix of the blocks (the attention's input projection
        included; biases keep PyTorch's defaults: zero in the attention, uniform +-1/sqrt(D) in the feed-forward),
        items truncated N(0, 0.02) and positions truncated N(0, 1/D), both cut at two standard deviations."""
        for p in self.blocks.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        for table, std in ((self.item_emb.weight, 0.02), (self.pos_emb.weight, self.hidden ** -0.5)):
            nn.init.trunc_normal_(table, std=std, a=-2 * std, b=2 * std)

    @classmethod
    def from_config(cfg_cls, cfg, ctx: ModelContext) -> "SASRec":
        c = cfg.model.sasrec
        return cfg_cls(ctx.num_items, cfg.data.max_history, c.hidden, c.layers, c.heads, c.dropout, c.loss,
                       c.num_negatives, c.temperature, c.negatives, c.l2_norm, c.mask_padding, c.reference_details,
                       c.attention, c.window)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, T) left-padded item ids -> (B, T, D) hidden states (position t sees items <= t)."""
        B, T = seq.shape
        pad = seq == 0
        causal = torch.ones(T, T, dtype=torch.bool, device=seq.device).triu(1)  # True = masked
        if self.mask_padding:
            pos = ((~pad).long().cumsum(-1) - 1).clamp(min=0)  # 0 = the oldest item
            if self.blocks[0].kernel is None:  # MultiheadAttention's mask; a kernel builds its own
                eye = torch.eye(T, dtype=torch.bool, device=seq.device)
                causal = causal | (pad[:, None, :] & ~eye)  # a padded row keeps its own key: no empty softmax
                causal = causal.repeat_interleave(self.heads, dim=0)  # (B * heads, T, T), as MHA takes it
        else:
            pos = torch.arange(T, device=seq.device)  # T - 1 = the newest item
        x = self.item_emb(seq) * self.hidden ** 0.5 + self.pos_emb(pos)
        x = self.drop(x).masked_fill(pad[..., None], 0.0)
        key_padding_mask = pad if self.mask_padding else None
        for block in self.blocks:
            x = block(x, causal, pad, key_padding_mask)
        x = self.ln(x)
        return F.normalize(x, dim=-1, eps=1e-6) if self.l2_norm else x

    def item_table(self) -> torch.Tensor:
        """(N + 1, D) item embeddings as the logits see them (L2-normalised with ``l2_norm``)."""
        w = self.item_emb.weight
        return F.normalize(w, dim=-1, eps=1e-6) if self.l2_norm else w

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        h = self.encode(batch["input"])
        return Output(loss=self.loss_fn(self, h, batch["labels"]))

    def score(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, N + 1) scores of every item as the next one after ``batch["history"]``."""
        h = self.encode(batch["history"])[:, -1]  # the most recent position (histories are left-padded)
        with torch.autocast(h.device.type, enabled=False):  # fp32 scores: bf16 would tie many items
            return h.float() @ self.item_table().float().T / self.temperature
