"""The tokenizer interface: content embeddings (N, E) -> semantic codes (N, L), before the collision digit.

    tok = TOKENIZERS["rkmeans"].from_config(cfg.tokenizer)
    tok.fit(emb)                    # (N, E) float
    codes = tok.encode(emb)         # (N, L) long, level l in [0, K_l)
    approx = tok.decode(codes)      # (N, E) float (random IDs carry no content and cannot decode)
    tok.save(path); tok = load_tokenizer(path)

``encode`` works on items unseen by ``fit`` (a new item gets codes without refitting); ``dedup.py`` then gives
it the next free collision digit. Implementations keep their fitted state in ``state_dict()`` tensors and
their constructor kwargs in ``config``, which is what ``save`` writes.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch


class Tokenizer:
    kind: str = ""
    decodes_to_input: bool = True  # ``decode`` returns vectors in the embedding space ``fit`` saw

    def __init__(self, num_levels: int = 3, codebook_size: int = 256, seed: int = 0):
        if num_levels < 1:
            raise ValueError(f"tokenizer.num_levels={num_levels} must be >= 1")
        if codebook_size < 2:
            raise ValueError(f"tokenizer.codebook_size={codebook_size} must be >= 2")
        self.num_levels = num_levels
        self.codebook_size = codebook_size
        self.seed = seed
        self.fitted = False
        self.config: dict[str, Any] = {"num_levels": num_levels, "codebook_size": codebook_size, "seed": seed}

    @classmethod
    def from_config(cls, cfg) -> "Tokenizer":
        """Build from a ``TokenizerConfig``: the shared knobs plus the kind's own sub-config (if any)."""
        sub = getattr(cfg, cls.kind, None)
        kwargs = dataclasses.asdict(sub) if dataclasses.is_dataclass(sub) else {}
        return cls(num_levels=cfg.num_levels, codebook_size=cfg.codebook_size, seed=cfg.seed, **kwargs)

    @property
    def codebook_sizes(self) -> list[int]:
        return [self.codebook_size] * self.num_levels

    # -- to implement --------------------------------------------------------------------------------------
    def fit(self, emb: torch.Tensor) -> "Tokenizer":
        raise NotImplementedError

    def encode(self, emb: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(emb) or load_tokenizer(path) first")

    def _check_emb(self, emb: torch.Tensor) -> torch.Tensor:
        if emb.ndim != 2:
            raise ValueError(f"expected embeddings of shape (N, E), got {tuple(emb.shape)}")
        return emb.detach().float().cpu()

    def save(self, path: str) -> None:
        self._check_fitted()
        torch.save({"kind": self.kind, "config": self.config, "state": self.state_dict()}, path)


def load_tokenizer(path: str) -> Tokenizer:
    """Rebuild a fitted tokenizer saved with ``Tokenizer.save``."""
    from . import TOKENIZERS

    from ..io import torch_load

    obj = torch_load(path, "fitted tokenizer", "delete it and rebuild with `genrec sids build`")
    tok = TOKENIZERS[obj["kind"]](**obj["config"])
    tok.load_state_dict(obj["state"])
    tok.fitted = True
    return tok
