"""The semantic-ID vocabulary shared by every generative model: codes, token offsets, user hashing, the trie.

A model's token space is laid out as

    0 .. S-1 special tokens | S .. S+U-1 hashed user tokens | one block of K_l codes per level l

so level l's code c is token ``offset_l + c`` with ``offset_l = S + U + sum(K_<l)``. TIGER (S = 2: pad, eos), the
decoder-only model (S = 2: pad, bos) and the parallel model (S = 0, no user tokens) use it as is; the LLM's codes are
tokens added after its base vocabulary (S = the base vocabulary size, no user tokens; ``genrec.llm.tokens``).
``SidVocab`` is an ``nn.Module`` so that its buffers follow the model to its device; it has no parameters and
nothing in the state dict (the codes come from the semantic-ID artifact, not from a checkpoint).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import Recommender

_HASH_MULT = 2654435761  # Knuth's multiplicative hash constant (2^32 / golden ratio), as in TIGER


def hash_user(user: torch.Tensor, num_user_tokens: int) -> torch.Tensor:
    """Bucket of each user id in ``[0, num_user_tokens)``: a fixed multiplicative hash (the hashing trick).

    Depends only on the id, so a user keeps one token across runs, processes and examples.
    """
    return ((user.long() * _HASH_MULT) % (1 << 32)) % num_user_tokens


class SidVocab(nn.Module):
    """Item -> code -> token maps, user tokens and the cached code trie of one semantic-ID artifact.

    Args:
        sid_codes: (N + 1, L) long codes, row i = item i (row 0 = padding, never used).
        codebook_sizes: K_l per level (after the collision digit).
        num_special: S tokens before the user tokens (0 .. S-1; token 0 is padding in every model here).
        num_user_tokens: U hashed user tokens (0 disables them).
        owner: the config section that asked for the vocabulary, named in errors (e.g. ``model.kind='tiger'``).

    Raises:
        ValueError: codes missing, of the wrong shape, or outside ``[0, K_l)``.
    """

    def __init__(self, sid_codes: torch.Tensor | None, codebook_sizes: Sequence[int], num_special: int = 0,
                 num_user_tokens: int = 0, owner: str = "this model"):
        super().__init__()
        if sid_codes is None or not len(codebook_sizes):
            raise ValueError(f"{owner} needs semantic IDs (ctx.sid_codes); build them with `genrec sids build`")
        if sid_codes.dim() != 2 or sid_codes.shape[1] != len(codebook_sizes):
            raise ValueError(f"{owner}: sid_codes of shape {tuple(sid_codes.shape)} do not match codebook_sizes "
                             f"(L={len(codebook_sizes)}); expected (N + 1, L)")
        if num_user_tokens < 0:
            raise ValueError(f"{owner}: num_user_tokens={num_user_tokens} must be >= 0 (0 disables them)")
        codes = sid_codes.long().cpu()
        sizes = torch.tensor([int(k) for k in codebook_sizes])
        if codes.shape[0] > 1 and (codes[1:].min() < 0 or (codes[1:] >= sizes).any()):
            raise ValueError(f"{owner}: sid_codes has a code outside [0, codebook_sizes[level]) for some level")
        self.codebook_sizes = sizes.tolist()
        self.num_levels = len(self.codebook_sizes)
        self.num_items = codes.shape[0] - 1
        self.num_special, self.num_user_tokens = int(num_special), int(num_user_tokens)
        base = self.num_special + self.num_user_tokens
        self.offsets_list = [base + sum(self.codebook_sizes[:l]) for l in range(self.num_levels)]
        self.size = base + sum(self.codebook_sizes)  # tokens in the whole space
        self.register_buffer("codes", codes.clone(), persistent=False)  # (N + 1, L)
        self.register_buffer("offsets", torch.tensor(self.offsets_list), persistent=False)  # (L,)
        # CPU copies for collate functions, which run in DataLoader workers before batches reach the device: a
        # forked worker must never touch a CUDA buffer
        self.cpu_codes, self.cpu_offsets = codes, torch.tensor(self.offsets_list)
        self._trie = None
        self._trie_cpu, self._starts = None, None  # for prefix ids (built on first use)
        self._prefixes: dict[torch.device, torch.Tensor] = {}  # (N + 1, L) prefix_ids table per device

    def level_slice(self, level: int) -> slice:
        """Token ids of level ``level``'s codes: ``slice(offset_l, offset_l + K_l)``."""
        lo = self.offsets_list[level]
        return slice(lo, lo + self.codebook_sizes[level])

    def user_tokens(self, user: torch.Tensor) -> torch.Tensor:
        """(B,) user ids -> (B,) user tokens in ``[S, S + U)``."""
        if self.num_user_tokens == 0:
            raise ValueError("user_tokens: this vocabulary has no user tokens (num_user_tokens=0)")
        return self.num_special + hash_user(user, self.num_user_tokens)

    def item_tokens(self, items: torch.Tensor, pad: int = 0, on_cpu: bool = False) -> torch.Tensor:
        """(...,) item ids -> (..., L) tokens of their codes; padding items (0) map to ``pad``."""
        codes, offsets = (self.cpu_codes, self.cpu_offsets) if on_cpu else (self.codes, self.offsets)
        return (codes[items] + offsets).masked_fill((items == 0).unsqueeze(-1), pad)

    def prefix_ids(self, items: torch.Tensor, on_cpu: bool = False) -> torch.Tensor:
        """(...,) item ids -> (..., L) id of each code's ID prefix (the item's codes up to and including it).

        Prefixes of length 2 .. L are numbered 1 .. ``num_prefixes``, level by level (the ``SidTrie`` node ids,
        and the item itself for the full ID); a level-0 code (its prefix is the code itself) and padding items
        get 0. Row j of a prefix embedding then gives every distinct prefix, and every item, an input row of its
        own while the codes stay shared (prefix n-grams: Singh et al., RecSys 2024, "Better Generalization with
        Semantic IDs").
        """
        device = torch.device("cpu") if on_cpu else items.device
        if device not in self._prefixes:
            self._prefixes[device] = self._prefix_table().to(device)
        return self._prefixes[device][items]

    def prefix_of(self, prefix: torch.Tensor) -> torch.Tensor:
        """(R, m) codes of levels 0 .. m-1 -> (R,) the id of each prefix as in ``prefix_ids``; 0 if m < 2 or the
        prefix names no item (a finished beam's filler).

        Decoding feeds generated codes one at a time; the id of the newest one's prefix is read from the trie.
        """
        m = prefix.shape[1]
        if m < 2:
            return torch.zeros(prefix.shape[0], dtype=torch.long, device=prefix.device)
        return self._node_prefix_ids(m, self.trie().walk(prefix))

    def child_prefix_ids(self, prefix: torch.Tensor) -> torch.Tensor:
        """(R, l) codes of levels 0 .. l-1 (1 <= l < L) -> (R, K_l): the ``prefix_ids`` id of each one-code
        extension of the prefix, 0 where that code names no prefix of an item (or the prefix itself names none)."""
        m = prefix.shape[1]
        if not 1 <= m < self.num_levels:
            raise ValueError(f"child_prefix_ids: prefixes of 1 .. {self.num_levels - 1} codes, got {m}")
        trie = self.trie()
        node = trie.walk(prefix)
        child = trie.children(m, node.clamp(min=0))  # level-(m + 1) nodes, or item ids at the last level
        return torch.where((node >= 0)[:, None], self._node_prefix_ids(m + 1, child), 0)

    def prefix_block(self, length: int) -> slice:
        """Ids of the prefixes of ``length`` codes (2 <= length <= L) among 1 .. ``num_prefixes``."""
        starts = self._prefix_starts()
        return slice(1 + starts[length - 2], 1 + starts[length - 1])

    @property
    def num_prefixes(self) -> int:
        """Distinct ID prefixes of length 2 .. L (the last length: one per item)."""
        return self._prefix_starts()[-1]

    def _node_prefix_ids(self, length: int, node: torch.Tensor) -> torch.Tensor:
        """Trie nodes of prefixes of ``length`` codes (item ids when length = L, -1 for none) -> their ids (0: none)."""
        ids = 1 + self._prefix_starts()[length - 2] + node - int(length == self.num_levels)  # items count from 1
        return torch.where(node >= 0, ids, 0)

    def _prefix_starts(self) -> list[int]:
        """Where each prefix length's ids start (length 2 first), plus the total at the end."""
        if self._starts is None:
            from ..generation import SidTrie

            self._trie_cpu = SidTrie.from_codes(self.cpu_codes[1:], self.codebook_sizes)
            nodes = self._trie_cpu.num_nodes[2:] + [self.num_items]  # distinct prefixes of length 2 .. L
            self._starts = [sum(nodes[:i]) for i in range(len(nodes) + 1)] if self.num_levels > 1 else [0]
        return self._starts

    def _prefix_table(self) -> torch.Tensor:
        """(N + 1, L) CPU table of ``prefix_ids``, built once from the trie."""
        cpu = torch.device("cpu")
        if cpu not in self._prefixes:
            table = torch.zeros(self.num_items + 1, self.num_levels, dtype=torch.long)
            self._prefix_starts()
            for m in range(2, self.num_levels + 1):
                table[1:, m - 1] = self._node_prefix_ids(m, self._trie_cpu.walk(self.cpu_codes[1:, :m]))
            self._prefixes[cpu] = table
        return self._prefixes[cpu]

    def _apply(self, fn, recurse=True):
        # ``.to(device)`` moves a built trie with the buffers, so a forward never builds or copies one (under
        # ``train.compile`` that would be host reads inside the compiled step)
        super()._apply(fn, recurse)
        if self._trie is not None and self._trie.device != self.codes.device:
            self._trie = self._trie.to(self.codes.device)
        return self

    def trie(self):
        """The ``SidTrie`` of every item's codes, built once per device of the vocabulary."""
        from ..generation import SidTrie

        dev = self.codes.device
        if self._trie is None or self._trie.device != dev:
            self._trie = SidTrie.from_codes(self.codes[1:], self.codebook_sizes).to(dev)
        return self._trie

    def item_scores(self, level_log_probs: Sequence[torch.Tensor], chunk: int = 65536) -> torch.Tensor:
        """Exact score of every item as the sum of its codes' per-level log-probs.

        Args:
            level_log_probs: L tensors (B, K_l).
            chunk: items scored at a time (bounds the (B, chunk, L) gather for catalogs of millions).

        Returns:
            (B, N + 1) float scores, column 0 (padding) = -inf.
        """
        b = level_log_probs[0].shape[0]
        table = torch.cat([lp.float() for lp in level_log_probs], dim=1).t().contiguous()  # (sum K, B)
        starts = self.offsets - self.offsets_list[0]  # (L,) level starts in the table
        out = table.new_empty(b, self.num_items + 1)
        out[:, 0] = float("-inf")
        for lo in range(1, self.num_items + 1, chunk):
            idx = self.codes[lo : lo + chunk] + starts  # (n, L) rows of the table
            # a bag-sum of L rows per item, without materialising a (B, n, L) gather
            out[:, lo : lo + idx.shape[0]] = F.embedding_bag(idx, table, mode="sum").t()
        return out

    def extra_repr(self) -> str:
        return (f"items={self.num_items}, levels={self.codebook_sizes}, special={self.num_special}, "
                f"users={self.num_user_tokens}, size={self.size}")





class SidModel(Recommender):
    """Base of the generative models: holds ``self.vocab`` (a ``SidVocab``) and reads the vocabulary through it.

    The read-only views below (``sid_codes``, ``offsets``, ...) and ``trie()`` exist once, here, for every model.
    """

    vocab: SidVocab
    ranking = "list"  # by default generative models rank by their constrained search

    @property
    def sid_codes(self) -> torch.Tensor:
        return self.vocab.codes

    @property
    def offsets(self) -> torch.Tensor:
        return self.vocab.offsets

    @property
    def offsets_list(self) -> list[int]:
        return self.vocab.offsets_list

    @property
    def codebook_sizes(self) -> list[int]:
        return self.vocab.codebook_sizes

    @property
    def num_levels(self) -> int:
        return self.vocab.num_levels

    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    def trie(self):
        return self.vocab.trie()
__all__ = ["SidModel", "SidVocab", "hash_user"]
