"""Semantic-ID tokens for a causal LM: one new token per (level, code), as in LC-Rec (Zheng et al., ICDE 2024).

Item ``i`` with codes ``(12, 7, 201, 0)`` is written ``<a_12><b_7><c_201><d_0>``: level ``l`` uses the ``l``-th
lowercase letter, so the same code number at two levels is two different tokens (the levels mean different things).
"""
from __future__ import annotations

import string
from typing import Sequence

import torch


def level_name(level: int) -> str:
    if not 0 <= level < 26:
        raise ValueError(f"semantic IDs with {level + 1} levels: at most 26 levels have token names (a..z)")
    return string.ascii_lowercase[level]


def sid_token(level: int, code: int) -> str:
    return f"<{level_name(level)}_{int(code)}>"


def sid_vocabulary(codebook_sizes: Sequence[int]) -> list[str]:
    """All new tokens, level-major: ``<a_0> .. <a_{K0-1}>, <b_0> .. ``."""
    return [sid_token(lvl, c) for lvl, k in enumerate(codebook_sizes) for c in range(int(k))]


def sid_string(codes: Sequence[int] | torch.Tensor) -> str:
    """``(12, 7, 201, 0) -> "<a_12><b_7><c_201><d_0>"``."""
    return "".join(sid_token(lvl, int(c)) for lvl, c in enumerate(codes))


class SidTokenMap:
    """Maps (level, code) <-> token ids of a tokenizer that holds ``sid_vocabulary(codebook_sizes)``.

    Args:
        level_ids: per level, a LongTensor (K_l,) of token ids; ``level_ids[l][c]`` is the token of code ``c``.
    """

    def __init__(self, level_ids: list[torch.Tensor]):
        self.level_ids = level_ids

    @classmethod
    def from_tokenizer(cls, tokenizer, codebook_sizes: Sequence[int]) -> "SidTokenMap":
        level_ids = []
        for lvl, k in enumerate(codebook_sizes):
            toks = [sid_token(lvl, c) for c in range(int(k))]
            ids = tokenizer.convert_tokens_to_ids(toks)
            missing = [t for t, i in zip(toks, ids) if i is None or i == tokenizer.unk_token_id]
            if missing:
                raise ValueError(f"tokenizer lacks semantic-ID tokens {missing[:3]}...; call add_sid_tokens first")
            level_ids.append(torch.tensor(ids, dtype=torch.long))
        return cls(level_ids)

    @property
    def all_ids(self) -> list[int]:
        return torch.cat(self.level_ids).tolist()

    def encode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (..., L) -> token ids (..., L)."""
        return torch.stack([self.level_ids[lvl].to(codes.device)[codes[..., lvl]] for lvl in range(codes.shape[-1])], -1)


def add_sid_tokens(tokenizer, codebook_sizes: Sequence[int]) -> list[str]:
    """Add the semantic-ID vocabulary as atomic tokens (never split, never normalised). Returns the new tokens."""
    from tokenizers import AddedToken

    vocab = sid_vocabulary(codebook_sizes)
    tokenizer.add_tokens([AddedToken(t, single_word=False, normalized=False, special=True) for t in vocab])
    return vocab


__all__ = ["SidTokenMap", "add_sid_tokens", "level_name", "sid_string", "sid_token", "sid_vocabulary"]
