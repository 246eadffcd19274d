"""The tensor trie as a transformers ``LogitsProcessor``, and a generation config that inherits nothing.

Used where decoding goes through ``model.generate`` (an LLM with the codes as added tokens, LC-Rec-style; or as a
baseline for :func:`genrec.generation.constrained_beam_search`). GENRE (De Cao et al. 2021) introduced
``prefix_allowed_tokens_fn``; transformers applies it with a Python call per (batch, beam) row at every step
(``PrefixConstrainedLogitsProcessor``). :class:`SidLogitsProcessor` applies the same constraint as a few batched
gathers over the generated tokens.

Vocabulary mapping: the model's token id of code ``c`` at level ``l`` is ``level_token_ids[l][c]`` (for contiguous
added tokens, ``offset_l + arange(K_l)``; see :func:`contiguous_level_token_ids`).

``generate`` fills every generation field left ``None`` from the checkpoint's ``generation_config`` (a checkpoint
with ``do_sample=True, temperature=0.7`` would otherwise sample). :func:`beam_generation_config` sets every field that
changes the search explicitly, and :func:`generate_constrained` also hides the checkpoint's config during the call,
so fields that can only be unset (``forced_eos_token_id``, ``suppress_tokens``, ...) cannot leak either.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from .trie import SidTrie


def contiguous_level_token_ids(codebook_sizes: Sequence[int], offset: int) -> list[torch.Tensor]:
    """Token ids when the codes of all levels are one contiguous block of the vocabulary starting at ``offset``,
    level by level: code c of level l is ``offset + sum(K_<l) + c``."""
    out, start = [], offset
    for k in codebook_sizes:
        out.append(torch.arange(start, start + k))
        start += k
    return out


class SidLogitsProcessor(LogitsProcessor):
    """Masks the next-token scores of ``generate`` to the codes the trie allows after each row's generated prefix.

    Stateless: each call reads the generated codes from ``input_ids[:, prompt_length:]`` and walks the trie
    (O(level) batched gathers), so it is correct under any beam reordering. Rows whose prefix left the trie get
    -inf everywhere. After the last level only the EOS tokens (if given) are allowed.

    Args:
        trie: the valid codes.
        level_token_ids: per level a (K_l,) long tensor of vocabulary ids of the codes.
        prompt_length: tokens of ``input_ids`` before the first code (decoder-only: the padded prompt length;
            encoder-decoder: 1, the decoder start token).
        vocab_size: the model's output size (to build the inverse map).
        eos_token_id: token(s) allowed once all L codes are generated.
    """

    def __init__(
        self,
        trie: SidTrie,
        level_token_ids: Sequence[torch.Tensor],
        prompt_length: int,
        vocab_size: int,
        eos_token_id: int | Sequence[int] | None = None,
    ):
        if len(level_token_ids) != trie.num_levels:
            raise ValueError(
                f"level_token_ids has {len(level_token_ids)} levels, the trie has L={trie.num_levels}"
            )
        device = trie.device
        self.trie = trie
        self.token_ids = [torch.as_tensor(t, dtype=torch.long, device=device) for t in level_token_ids]
        for level, (ids, k) in enumerate(zip(self.token_ids, trie.codebook_sizes)):
            if ids.shape != (k,) or int(ids.max()) >= vocab_size or int(ids.min()) < 0:
                raise ValueError(
                    f"level_token_ids[{level}] must be {k} token ids in [0, vocab_size={vocab_size}), "
                    f"got shape {tuple(ids.shape)}"
                )
        # token id -> code at each level (-1: not a code of that level)
        self.token_to_code = []
        for ids in self.token_ids:
            inv = torch.full((vocab_size,), -1, dtype=torch.long, device=device)
            inv[ids] = torch.arange(len(ids), device=device)
            self.token_to_code.append(inv)
        self.prompt_length = prompt_length
        eos = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        self.eos = torch.as_tensor(eos, dtype=torch.long, device=device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length :].to(self.trie.device)  # (R, level)
        level = generated.shape[1]
        out = torch.full_like(scores, float("-inf"))
        if level >= self.trie.num_levels:
            if len(self.eos):
                out[:, self.eos] = scores[:, self.eos]
            return out
        codes = torch.stack(
            [self.token_to_code[l][generated[:, l]] for l in range(level)], dim=1
        ) if level else generated  # (R, level); -1 where a token is not a code
        allowed = self.trie.allowed(codes).to(scores.device)  # (R, K_level)
        ids = self.token_ids[level].to(scores.device)
        out[:, ids] = scores[:, ids].masked_fill(~allowed, float("-inf"))
        return out


def beam_generation_config(
    num_beams: int,
    num_levels: int,
    num_return_sequences: int | None = None,
    *,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    decoder_start_token_id: int | None = None,
    bos_token_id: int | None = None,
    output_scores: bool = False,
) -> GenerationConfig:
    """A deterministic beam-search config for decoding exactly ``num_levels`` codes.

    Every field that changes which beams survive is set explicitly: no sampling, neutral penalties (repetition,
    n-gram, length: 0.0, since every item has the same length), no minimum length, early stopping off
    (all beams run exactly L steps). Pass it to :func:`generate_constrained`, which also hides the checkpoint's own
    config so fields that can only be left unset cannot be filled from it. ``output_scores=True`` makes
    generate return ``sequences_scores`` (the summed log-probs, as ``BeamOutput.scores``).
    """
    return GenerationConfig(
        do_sample=False,
        num_beams=num_beams,
        num_return_sequences=num_return_sequences or num_beams,
        max_new_tokens=num_levels,
        min_new_tokens=0,
        early_stopping=False,
        length_penalty=0.0,
        temperature=1.0,
        top_k=50,  # unused when do_sample=False; set so nothing is inherited
        top_p=1.0,
        typical_p=1.0,
        epsilon_cutoff=0.0,
        eta_cutoff=0.0,
        repetition_penalty=1.0,
        encoder_repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        encoder_no_repeat_ngram_size=0,
        renormalize_logits=False,
        remove_invalid_values=False,
        use_cache=True,
        output_scores=output_scores,
        return_dict_in_generate=True,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        decoder_start_token_id=decoder_start_token_id,
        bos_token_id=bos_token_id,
    )


@contextlib.contextmanager
def _hidden_generation_config(model) -> Iterator[None]:
    saved = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


def generate_constrained(
    model, generation_config: GenerationConfig, processor: LogitsProcessor | None = None, **inputs
):
    """``model.generate(**inputs)`` with exactly ``generation_config`` (the checkpoint's config is hidden for the
    call) and the trie processor. Extra generate kwargs (e.g. ``prefix_allowed_tokens_fn``) pass through ``inputs``.

    Returns:
        generate's output (``return_dict_in_generate=True``: ``.sequences`` and ``.sequences_scores``).
    """
    processors = LogitsProcessorList([processor] if processor is not None else [])
    with _hidden_generation_config(model), torch.no_grad():
        return model.generate(**inputs, generation_config=generation_config, logits_processor=processors)
