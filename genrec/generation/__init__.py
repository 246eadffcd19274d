"""Constrained decoding of semantic IDs: a tensor trie of valid codes and a batched beam search over it.

``SidTrie.from_codes(codes, codebook_sizes)`` builds the trie; ``constrained_beam_search(step_fn, trie, B, W)``
returns each user's top items (``BeamOutput``); ``hf_logits`` applies the same trie to transformers' ``generate``.
"""
from .beam_search import BeamOutput, StepFn, constrained_beam_search, exhaustive_scores
from .trie import SidTrie

__all__ = ["BeamOutput", "SidTrie", "StepFn", "constrained_beam_search", "exhaustive_scores"]
