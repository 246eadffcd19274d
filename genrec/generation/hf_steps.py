"""Step functions that drive transformers models with a KV cache under :func:`constrained_beam_search`.

They are the decoding path of the models themselves: TIGER (``encoder_decoder_step_fn`` over its T5) and the LLM
recommender (``causal_lm_step_fn`` over its causal LM), and of the decoding benchmark. The beam width W is read
from the rows of the first call (``B * W``). Both keep the model's cache in the row order of the previous step and reorder it with ``parent``
(``Cache.reorder_cache``). Level 0 runs on the B users only, then repeats the cache W times
(``batch_repeat_interleave``): the W beams of a user share their prompt. Log-probs are a log-softmax over the
model's whole vocabulary, sliced to the level's code tokens, which is what ``generate`` scores, so both decoders
rank identically; pass ``renormalize=True`` to normalise over the level's codes instead.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

from .beam_search import StepFn


def left_padded_mask(model, attention_mask: torch.Tensor) -> torch.Tensor:
    """The attention mask to give a transformers causal LM for a LEFT-padded (B, T) batch of 0/1 ``attention_mask``.

    transformers 5 hands sdpa a boolean causal + padding mask in which a padding query row sees no key at all.
    PyTorch's CPU kernels return zeros for such a row; CUDA backends may return NaN, which the next layer spreads to
    the row's real tokens through 0 * NaN (pytorch/pytorch#103749, #110213): an LLM fine-tune on a GPU then has a
    NaN loss from its first step. For sdpa models this returns the (B, 1, T, T) boolean mask (causal, padding keys
    hidden) in which each padding query sees its own key: the real rows' attention is unchanged and the padding
    rows stay finite on every backend. It is built whether or not the batch has padding (asking would read the
    mask back from the device: a GPU sync at every forward). With another attention implementation (eager fills
    masked scores with the dtype's minimum: finite) the 2D mask is returned as it is.
    """
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return attention_mask
    keep = attention_mask.bool()  # (B, T)
    t = keep.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=keep.device).tril()
    own = torch.eye(t, dtype=torch.bool, device=keep.device)
    mask = (causal & keep[:, None, :]) | (own & ~keep[:, :, None])  # (B, Tq, Tk)
    return mask[:, None]


def _level_logp(logits: torch.Tensor, token_ids: torch.Tensor, renormalize: bool) -> torch.Tensor:
    logits = logits.float()
    if renormalize:
        return torch.log_softmax(logits[:, token_ids], dim=-1)
    return torch.log_softmax(logits, dim=-1)[:, token_ids]


def _beams(rows: int, batch: int) -> int:
    if rows % batch:
        raise ValueError(f"step_fn: {rows} rows at level 0 is not a multiple of the batch size {batch}")
    return rows // batch


def encoder_decoder_step_fn(
    model,
    encoder_hidden: torch.Tensor,
    encoder_mask: torch.Tensor | None,
    level_token_ids: Sequence[torch.Tensor],
    decoder_start_token_id: int,
    renormalize: bool = False,
) -> StepFn:
    """Step function for a transformers encoder-decoder (T5, BART) whose decoder emits the codes as tokens.

    Args:
        model: e.g. ``T5ForConditionalGeneration`` in eval mode.
        encoder_hidden: (B, S, D) encoder outputs, computed once per batch.
        encoder_mask: (B, S) attention mask of the encoder input, or None.
        level_token_ids: per level the (K_l,) decoder token ids of the codes.
        decoder_start_token_id: the decoder's first input token.
        renormalize: normalise over the level's codes instead of the whole vocabulary.

    Returns:
        A ``step_fn`` for ``constrained_beam_search(..., batch_size=B, beam_size=W)``.
    """
    b = encoder_hidden.shape[0]
    token_ids = [torch.as_tensor(t, device=encoder_hidden.device) for t in level_token_ids]
    if encoder_mask is not None and bool(encoder_mask.all()):
        encoder_mask = None  # an all-ones mask changes nothing; without it attention skips the additive mask
    enc_b = BaseModelOutput(last_hidden_state=encoder_hidden)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    state = {}

    def step(level: int, prefix: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
        if level == 0:  # B rows: every beam of a user starts from the same state
            w = _beams(prefix.shape[0], b)
            tok = torch.full((b, 1), decoder_start_token_id, dtype=torch.long, device=encoder_hidden.device)
            out = model(encoder_outputs=enc_b, attention_mask=encoder_mask, decoder_input_ids=tok,
                        cache=cache, use_cache=True)
            cache.batch_repeat_interleave(w)  # self- and cross-attention keys -> B*W rows
            # later steps read the cross-attention keys from the cache; the states only give shapes
            state["enc"] = BaseModelOutput(last_hidden_state=encoder_hidden.repeat_interleave(w, dim=0))
            state["mask"] = None if encoder_mask is None else encoder_mask.repeat_interleave(w, dim=0)
            return _level_logp(out.logits[:, -1], token_ids[0], renormalize).repeat_interleave(w, dim=0)
        # parent stays within a user's rows, so the cross-attention cache (identical across a user's beams)
        # needs no reordering; only the self-attention cache does.
        cache.self_attention_cache.reorder_cache(parent)
        tok = token_ids[level - 1][prefix[:, -1]][:, None]
        out = model(encoder_outputs=state["enc"], attention_mask=state["mask"], decoder_input_ids=tok,
                    cache=cache, use_cache=True)
        return _level_logp(out.logits[:, -1], token_ids[level], renormalize)

    return step


def causal_lm_step_fn(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    level_token_ids: Sequence[torch.Tensor],
    renormalize: bool = False,
) -> StepFn:
    """Step function for a transformers decoder-only LM (codes as added tokens after a prompt).

    Args:
        model: e.g. ``LlamaForCausalLM`` in eval mode.
        input_ids: (B, T) prompts, LEFT-padded so that every prompt ends at the last column.
        attention_mask: (B, T) 1 for prompt tokens, 0 for padding.
        level_token_ids: per level the (K_l,) vocabulary ids of the codes.
        renormalize: normalise over the level's codes instead of the whole vocabulary.

    Returns:
        A ``step_fn`` for ``constrained_beam_search(..., batch_size=B, beam_size=W)``. Positions count only
        real tokens (``cumsum(attention_mask) - 1``), as ``generate`` does for left-padded prompts. The prompt
        forward computes logits for its last position only (``logits_to_keep=1``).
    """
    b = input_ids.shape[0]
    token_ids = [torch.as_tensor(t, device=input_ids.device) for t in level_token_ids]
    cache = DynamicCache()
    state = {}

    def step(level: int, prefix: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
        if level == 0:
            w = _beams(prefix.shape[0], b)
            pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=input_ids, attention_mask=left_padded_mask(model, attention_mask), position_ids=pos,
                        cache=cache, use_cache=True, logits_to_keep=1)
            cache.batch_repeat_interleave(w)
            state["mask"] = attention_mask.repeat_interleave(w, dim=0)
            state["pos"] = pos[:, -1:].repeat_interleave(w, dim=0)
            return _level_logp(out.logits[:, -1], token_ids[0], renormalize).repeat_interleave(w, dim=0)
        if level > 1:  # at level 1 a user's beams hold the same prompt cache and parent stays in the user's rows
            cache.reorder_cache(parent)
        # mask and positions are equal across a user's beams, so they need no reordering
        state["mask"] = torch.cat([state["mask"], state["mask"].new_ones(len(parent), 1)], dim=1)
        state["pos"] = state["pos"] + 1
        tok = token_ids[level - 1][prefix[:, -1]][:, None]
        out = model(input_ids=tok, attention_mask=state["mask"], position_ids=state["pos"],
                    cache=cache, use_cache=True)
        return _level_logp(out.logits[:, -1], token_ids[level], renormalize)

    return step
