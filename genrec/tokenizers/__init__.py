"""Semantic-ID tokenizers: ``TOKENIZERS[cfg.tokenizer.kind].from_config(cfg.tokenizer)``.

Each maps content embeddings (N, E) to codes (N, L) behind ``base.Tokenizer`` (fit / encode / decode /
save / load); ``dedup.py`` appends the collision digit and ``artifact.SemanticIds`` carries the result.
``rqvae`` and ``rkmeans`` share the residual loop of ``residual.py``; ``pq``, ``random`` and ``lsh`` are the
non-residual baselines (TIGER, Table 2); ``opq`` (faiss) gives the long flat IDs of RPG.
"""
from __future__ import annotations

from ..config import lookup
from .artifact import SemanticIds
from .base import Tokenizer, load_tokenizer
from .dedup import add_collision_digit, collision_digits
from .lsh import LSHTokenizer
from .opq import OPQTokenizer
from .pq import PQTokenizer
from .random_ids import RandomTokenizer
from .rkmeans import RKMeansTokenizer
from .rqvae import RQVAETokenizer

TOKENIZERS: dict[str, type[Tokenizer]] = {
    "rqvae": RQVAETokenizer,
    "rkmeans": RKMeansTokenizer,
    "pq": PQTokenizer,
    "opq": OPQTokenizer,
    "random": RandomTokenizer,
    "lsh": LSHTokenizer,
}


def build_tokenizer(cfg) -> Tokenizer:
    """A fresh tokenizer from a ``TokenizerConfig``."""
    return lookup(TOKENIZERS, cfg.kind, field="tokenizer.kind").from_config(cfg)


__all__ = [
    "TOKENIZERS",
    "Tokenizer",
    "SemanticIds",
    "build_tokenizer",
    "load_tokenizer",
    "add_collision_digit",
    "collision_digits",
]
