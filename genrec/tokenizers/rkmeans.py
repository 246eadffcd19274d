"""Residual k-means semantic IDs: one k-means per level on the residuals of the previous levels.

The RK-means row of TIGER's Table 2 (Rajput et al., NeurIPS 2023); the same construction, balanced, is used
by later semantic-ID work (e.g. OneRec's RQ-Kmeans). ``balanced=True`` caps clusters at ceil(N / K) while
fitting; encoding is nearest-centroid, so a new item encodes exactly as a fitted one would.
"""
from __future__ import annotations

import torch

from .base import Tokenizer
from .residual import fit_residual_kmeans, residual_decode, residual_encode


class RKMeansTokenizer(Tokenizer):
    kind = "rkmeans"

    def __init__(self, num_levels: int = 3, codebook_size: int = 256, seed: int = 0, balanced: bool = False, iters: int = 50):
        super().__init__(num_levels, codebook_size, seed)
        self.balanced, self.iters = balanced, iters
        self.config.update(balanced=balanced, iters=iters)
        self.books: list[torch.Tensor] = []

    def fit(self, emb: torch.Tensor) -> "RKMeansTokenizer":
        x = self._check_emb(emb)
        self.books = fit_residual_kmeans(x, self.num_levels, self.codebook_size, self.iters, self.seed, self.balanced)
        self.fitted = True
        return self

    def encode(self, emb: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        return residual_encode(self._check_emb(emb), self.books)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        return residual_decode(codes.long().cpu(), self.books)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"books": torch.stack(self.books)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.books = list(state["books"].unbind(0))
