"""Product quantisation (Jégou et al., TPAMI 2011): split the E dimensions into L contiguous sub-vectors and
run k-means in each, so level l's code describes sub-space l. Unlike residual IDs, the levels are not
coarse-to-fine; it is the usual non-hierarchical baseline for semantic IDs (e.g. VQ-Rec, Hou et al. 2023).
"""
from __future__ import annotations

import torch

from .base import Tokenizer
from .kmeans import assign, kmeans


class PQTokenizer(Tokenizer):
    kind = "pq"

    def __init__(self, num_levels: int = 3, codebook_size: int = 256, seed: int = 0, iters: int = 50):
        super().__init__(num_levels, codebook_size, seed)
        self.iters = iters
        self.config.update(iters=iters)
        self.books: list[torch.Tensor] = []  # L tensors (K, E_l)
        self.splits: list[int] = []  # E_l per level

    def _chunks(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(x, self.splits, dim=1))

    def fit(self, emb: torch.Tensor) -> "PQTokenizer":
        x = self._check_emb(emb)
        if x.shape[1] < self.num_levels:
            raise ValueError(f"pq needs E >= tokenizer.num_levels, got E={x.shape[1]}, L={self.num_levels}")
        self.splits = [len(t) for t in torch.arange(x.shape[1]).tensor_split(self.num_levels)]
        self.books = [
            kmeans(part, self.codebook_size, self.iters, seed=self.seed + l) for l, part in enumerate(self._chunks(x))
        ]
        self.fitted = True
        return self

    def encode(self, emb: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        x = self._check_emb(emb)
        return torch.stack([assign(part, book) for part, book in zip(self._chunks(x), self.books)], 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        codes = codes.long().cpu()
        return torch.cat([book[codes[:, l]] for l, book in enumerate(self.books)], 1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"book{l}": b for l, b in enumerate(self.books)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.books = [state[f"book{l}"] for l in range(self.num_levels)]
        self.splits = [b.shape[1] for b in self.books]
