"""TIGER: generative retrieval with semantic IDs and a T5 encoder-decoder.

Rajput et al., "Recommender Systems with Generative Retrieval", NeurIPS 2023. Each item is a tuple of L
semantic-ID codes (RQ-VAE levels plus a collision digit). The encoder reads a hashed user token followed by
the codes of the user's recent items; the decoder emits the L codes of the next item, one level per step.

Optional, off in the paper configs: ``recency_positions`` adds a learned embedding of each history token's recency
(1 = latest item) to the encoder input, and ``encoder_eos`` ends the input with </s>. T5 has relative positions
only and its cross-attention none, so the decoder must learn to find the latest item's codes among up to 80
look-alike tokens; on the embedded tiny shop (next item = successor of the last one, 70 %), after 15 epochs, plain
T5 reaches test NDCG@10 0.17 and T5 with recency positions 0.46 (Adafactor, lr 0.01; with AdamW, lr 0.003: 0.07
and 0.31).

Train it with Adafactor (``train.optimizer=adafactor``), as T5 and the paper do: T5's attention has no 1/sqrt(d)
and its query/key weights start at ~(d_model * d_kv)^-1/2, so an absolute AdamW step of the paper's lr 0.01 is
far too large, while Adafactor scales each step by the parameter's RMS.

The transformer is ``transformers.T5ForConditionalGeneration`` built from a ``T5Config`` (no download):
reproductions that wrote their own encoder-decoder landed far below the paper until they switched to a standard
T5 block, so we use the reference implementation rather than re-deriving it. Paper setup (Section 4): 4 encoder +
4 decoder layers, 6 heads x 64, model dim 128, ReLU MLP 1024, dropout 0.1, 2000 hashed user tokens.

Vocabulary (one table shared by encoder input, decoder input and output; T5 ties it to the output head):

    0 pad (also T5's decoder start token) | 1 eos (unused: every target has exactly L tokens)
    2 .. 2+U-1 hashed user tokens | then one block of K_l codes per level l, at offset_l = 2 + U + sum(K_<l)

Output distribution (``model.tiger.softmax``): "full" (default, as in the paper's standard T5 cross-entropy) scores
a level's codes by ``log_softmax`` over the whole vocabulary, then slices that level's block; training uses plain
cross-entropy over the full vocabulary on the L target tokens, so training and decoding score the same
probabilities. "level" normalises over the level's block only, in both the loss and decoding.

Generation is explicit constrained beam search (``genrec.generation.constrained_beam_search``): the encoder runs
once per batch, the decoder runs one token per level with its KV cache, reordered by each beam's parent. No
sampling path exists; ``generate()`` of the HF model is never called.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration

from .base import ModelContext, Output
from .vocab import SidModel, SidVocab, hash_user

PAD, EOS, NUM_SPECIAL = 0, 1, 2
SOFTMAX = ("full", "level")


def t5_config(tcfg, vocab_size: int) -> T5Config:
    """The ``T5Config`` for ``TigerConfig`` fields over a vocabulary of ``vocab_size`` tokens."""
    return T5Config(
        vocab_size=vocab_size,
        d_model=tcfg.d_model,
        d_kv=tcfg.d_kv,
        num_heads=tcfg.num_heads,
        d_ff=tcfg.d_ff,
        num_layers=tcfg.encoder_layers,
        num_decoder_layers=tcfg.decoder_layers,
        dropout_rate=tcfg.dropout,
        feed_forward_proj=tcfg.feed_forward_proj,
        relative_attention_num_buckets=tcfg.relative_attention_num_buckets,
        relative_attention_max_distance=tcfg.relative_attention_max_distance,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=PAD,
        use_cache=True,
    )


class TigerModel(SidModel):
    """T5 encoder-decoder over semantic-ID tokens (``example_mode = "next_item"``).

    Args:
        tcfg: ``TigerConfig`` (architecture and output distribution).
        sid_codes: (N + 1, L) long codes, row i = item i (row 0 = padding).
        codebook_sizes: K_l per level (L entries).
        beam_size: beams for ``recommend`` (at least k is used).
    """

    example_mode = "next_item"

    def __init__(self, tcfg, sid_codes: torch.Tensor, codebook_sizes: list[int], beam_size: int = 20):
        super().__init__()
        if tcfg.softmax not in SOFTMAX:
            raise ValueError(f"model.tiger.softmax={tcfg.softmax!r} is not one of {list(SOFTMAX)}")
        if tcfg.num_user_tokens < 0:
            raise ValueError(f"model.tiger.num_user_tokens={tcfg.num_user_tokens} must be >= 0 (0 disables them)")
        self.vocab = SidVocab(sid_codes, codebook_sizes, NUM_SPECIAL, tcfg.num_user_tokens, owner="model.kind='tiger'")
        self.num_user_tokens = int(tcfg.num_user_tokens)
        self.softmax = tcfg.softmax
        self.beam_size = int(beam_size)
        self.encoder_chunk = int(tcfg.encoder_chunk)
        self.encoder_eos = bool(tcfg.encoder_eos)
        # Checkpoints written before the shared vocabulary stored the codes too; they come from the artifact now.
        self.register_load_state_dict_pre_hook(lambda module, sd, prefix, *a: sd.pop(prefix + "sid_codes", None))
        self.t5 = T5ForConditionalGeneration(t5_config(tcfg, self.vocab_size))
        # Optional learned embedding of each history token's recency (see TigerConfig.recency_positions).
        self.recency = None
        if tcfg.recency_positions:
            self.recency = nn.Embedding(tcfg.recency_positions + 1, tcfg.d_model)
            nn.init.normal_(self.recency.weight, std=1.0)  # the scale of T5's token embeddings
        self.t5.generation_config.do_sample = False  # never sample, even if someone calls generate()

    @classmethod
    def from_config(cls, cfg, ctx: ModelContext) -> "TigerModel":
        rp = cfg.model.tiger.recency_positions
        if rp and rp < cfg.data.max_history:
            raise ValueError(f"model.tiger.recency_positions={rp} must be 0 or >= data.max_history="
                             f"{cfg.data.max_history} (one position per history item)")
        return cls(cfg.model.tiger, ctx.sid_codes, ctx.codebook_sizes, beam_size=cfg.eval.beam_size)

    # ------------------------------------------------------------------------------------------ inputs
    def item_tokens(self, items: torch.Tensor) -> torch.Tensor:
        """Vocabulary tokens of items: (...,) ids -> (..., L); padding items (0) map to PAD."""
        return self.vocab.item_tokens(items, pad=PAD)

    def encoder_inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoder tokens ``[pad..., user, codes of history items..., (eos)]``, their mask and recency, all (B, S).

        The whole sequence is left-padded (the user token sits right before the first item) so that T5's relative
        positions between real tokens do not depend on padding; all-padding leading columns are trimmed.
        ``recency`` is 1 for the codes of the most recent item, 2 for the one before, ..., and 0 for the user,
        end and padding tokens (used by ``model.tiger.recency_positions``).
        """
        history = batch["history"]  # (B, T), left-padded
        B, T = history.shape
        L = self.num_levels
        seq = self.item_tokens(history).reshape(B, T * L)  # (B, T*L)
        rec = torch.arange(T, 0, -1, device=history.device).repeat_interleave(L).expand(B, -1)
        rec = rec.masked_fill(seq == PAD, 0)
        if self.num_user_tokens > 0:
            user = self.vocab.user_tokens(batch["user"])  # (B,)
            seq = torch.cat([user.unsqueeze(1), seq], dim=1)  # (B, 1 + T*L)
            rec = torch.cat([torch.zeros_like(rec[:, :1]), rec], dim=1)
            real = seq != PAD
            order = torch.argsort(real.to(torch.int8), dim=1, stable=True)  # pads first, then user, then codes
            seq, rec = torch.gather(seq, 1, order), torch.gather(rec, 1, order)
        if self.encoder_eos:  # T5 inputs end with </s>; relative positions to it say how far from the end a token is
            seq = torch.cat([seq, torch.full_like(seq[:, :1], EOS)], dim=1)
            rec = torch.cat([rec, torch.zeros_like(rec[:, :1])], dim=1)
        mask = seq != PAD
        if self.static_shapes:
            return seq, mask.long(), rec
        n = int(mask.sum(1).max().item()) if B else 0
        n = max(n, 1)
        return seq[:, -n:], mask[:, -n:].long(), rec[:, -n:]

    def _encoder(self, ids: torch.Tensor, mask: torch.Tensor, rec: torch.Tensor | None) -> torch.Tensor:
        if self.recency is None or rec is None:
            return self.t5.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        embeds = self.t5.shared(ids) + self.recency(rec)
        return self.t5.encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state

    def encode(self, enc_ids: torch.Tensor, enc_mask: torch.Tensor, recency: torch.Tensor | None = None) -> torch.Tensor:
        """T5 encoder states (B, S, D) of left-padded inputs.

        With ``encoder_chunk`` > 0 the rows are sorted by length and encoded ``encoder_chunk`` at a time, each
        chunk trimmed to its longest row. Each row's states at its real positions are the same as in one padded
        call (padding is masked and T5's position bias is relative), so this only saves the work spent on padding:
        about 3x on Amazon 2014 training prefixes (mean 6.7 history items, max 20). Padded positions are zero.
        """
        chunk = self.encoder_chunk
        B, S = enc_ids.shape
        if chunk <= 0 or B <= chunk or self.static_shapes:
            return self._encoder(enc_ids, enc_mask, recency)
        lengths = enc_mask.sum(1)
        order = torch.argsort(lengths)
        out = None
        for idx in order.split(chunk):
            n = max(int(lengths[idx].max().item()), 1)
            h = self._encoder(enc_ids[idx, -n:], enc_mask[idx, -n:], None if recency is None else recency[idx, -n:])
            if out is None:
                out = h.new_zeros(B, S, h.shape[-1])
            out[idx, S - n :] = h
        return out

    def target_tokens(self, target: torch.Tensor) -> torch.Tensor:
        """(B,) item ids -> (B, L) vocabulary tokens of their codes."""
        return self.sid_codes[target] + self.offsets

    # ------------------------------------------------------------------------------------------ outputs
    def level_log_probs(self, logits: torch.Tensor, level: int) -> torch.Tensor:
        """(..., V) decoder logits -> (..., K_level) log-probs of that level's codes (see module docstring)."""
        lo, k = self.offsets_list[level], self.codebook_sizes[level]
        if self.softmax == "full":
            return F.log_softmax(logits.float(), dim=-1)[..., lo : lo + k]
        return F.log_softmax(logits[..., lo : lo + k].float(), dim=-1)

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.t5.config.scale_decoder_outputs:  # T5 with tied embeddings rescales before the head
            hidden = hidden * (self.t5.config.d_model**-0.5)
        return self.t5.lm_head(hidden)

    def decode(self, enc: torch.Tensor, enc_mask: torch.Tensor, dec_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decoder pass: encoder states (B, S, D), decoder inputs (B, L) -> logits (B, L, V)."""
        h = self.t5.decoder(
            input_ids=dec_in, encoder_hidden_states=enc, encoder_attention_mask=enc_mask, use_cache=False
        ).last_hidden_state
        return self._head(h)

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        """Teacher-forced loss on the target's L codes.

        Args:
            batch: ``user`` (B,), ``history`` (B, T) left-padded item ids, ``target`` (B,) item ids.

        Returns:
            Output(loss: mean cross-entropy over the B*L target tokens, logits: (B, L, V)).
        """
        enc_ids, enc_mask, rec = self.encoder_inputs(batch)
        labels = self.target_tokens(batch["target"])  # (B, L)
        dec_in = torch.cat([torch.full_like(labels[:, :1], PAD), labels[:, :-1]], dim=1)  # shift right
        logits = self.decode(self.encode(enc_ids, enc_mask, rec), enc_mask, dec_in)  # (B, L, V)
        if self.softmax == "full":
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))
        else:
            losses = [
                F.nll_loss(self.level_log_probs(logits[:, l], l), labels[:, l] - self.offsets_list[l])
                for l in range(self.num_levels)
            ]
            loss = torch.stack(losses).mean()
        return Output(loss=loss, logits=logits)

    def teacher_forced_log_probs(self, batch: dict[str, torch.Tensor], codes: torch.Tensor) -> torch.Tensor:
        """Log-probs of each level of ``codes`` (B, L) under one full decoder pass: (B, L, max K). Test oracle."""
        enc_ids, enc_mask, rec = self.encoder_inputs(batch)
        labels = codes + self.offsets
        dec_in = torch.cat([torch.full_like(labels[:, :1], PAD), labels[:, :-1]], dim=1)
        logits = self.decode(self.encode(enc_ids, enc_mask, rec), enc_mask, dec_in)
        out = logits.new_full((*codes.shape, max(self.codebook_sizes)), -math.inf, dtype=torch.float)
        for l in range(self.num_levels):
            out[:, l, : self.codebook_sizes[l]] = self.level_log_probs(logits[:, l], l)
        return out

    # --------------------------------------------------------------------------------------- generation
    def make_step_fn(self, batch: dict[str, torch.Tensor]):
        """A ``step_fn(level, prefix, parent) -> (B*W, K_level)`` for ``constrained_beam_search`` on this batch.

        The encoder runs once, here; decoding is ``genrec.generation.hf_steps.encoder_decoder_step_fn`` over the
        T5 (level 0 on the B users, then the KV cache copied W times and reordered by ``parent``), with the
        level's log-probs normalised as ``model.tiger.softmax`` says.
        """
        from ..generation.hf_steps import encoder_decoder_step_fn

        enc_ids, enc_mask, rec = self.encoder_inputs(batch)
        enc = self.encode(enc_ids, enc_mask, rec)  # (B, S, D)
        level_ids = [torch.arange(self.vocab.level_slice(l).start, self.vocab.level_slice(l).stop, device=enc.device)
                     for l in range(self.num_levels)]
        return encoder_decoder_step_fn(self.t5, enc, enc_mask, level_ids, decoder_start_token_id=PAD,
                                       renormalize=self.softmax == "level")

    @torch.no_grad()
    def recommend(self, batch: dict[str, torch.Tensor], k: int, beam_size: int | None = None):
        """Top-k distinct items by constrained beam search over semantic IDs.

        Args:
            batch: ``user`` (B,), ``history`` (B, T).
            k: items to return; the search uses ``max(beam_size, k)`` beams.

        Returns:
            items (B, k) long, best first, 0 where fewer than k items were found; scores (B, k) summed log-probs.
        """
        B = batch["history"].shape[0]
        W = max(beam_size or self.beam_size, k)
        chunk = self.encoder_chunk
        if chunk > 0 and B > chunk:  # length-sorted chunks: less padding, and a cache of chunk * W rows at a time
            order = torch.argsort((batch["history"] > 0).sum(1))
            items = torch.zeros(B, k, dtype=torch.long, device=batch["history"].device)
            scores = torch.zeros(B, k, device=batch["history"].device)
            for idx in order.split(chunk):
                sub = {key: v[idx] for key, v in batch.items() if torch.is_tensor(v) and v.shape[:1] == (B,)}
                items[idx], scores[idx] = self._recommend(sub, k, W)
            return items, scores
        return self._recommend(batch, k, W)

    def _recommend(self, batch, k: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
        from ..generation import constrained_beam_search

        B = batch["history"].shape[0]
        out = constrained_beam_search(
            self.make_step_fn(batch), self.trie(), batch_size=B, beam_size=W, device=self.sid_codes.device
        )
        return out.items[:, :k], out.scores[:, :k]


__all__ = ["TigerModel", "hash_user", "t5_config"]
