"""Locality-sensitive hashing IDs, the "LSH" baseline of TIGER's Table 2 (random-hyperplane SimHash,
Charikar 2002): level l's code packs the signs of log2(K) random hyperplanes through the data mean.

Nearby items share bits with high probability, but unlike learned codes the levels are not coarse-to-fine.
Hyperplanes are orthonormal when L * log2(K) <= E, so ``decode`` (the minimum-norm point with the given sign
pattern at unit margin) is exactly re-encoded to the same codes.
"""
from __future__ import annotations

import math

import torch

from .base import Tokenizer


class LSHTokenizer(Tokenizer):
    kind = "lsh"

    def __init__(self, num_levels: int = 3, codebook_size: int = 256, seed: int = 0):
        super().__init__(num_levels, codebook_size, seed)
        bits = math.log2(codebook_size)
        if bits != int(bits):
            raise ValueError(f"tokenizer.kind='lsh' needs tokenizer.codebook_size a power of two, got {codebook_size}")
        self.bits = int(bits)
        self.planes = torch.empty(0)  # (L * bits, E)
        self.mean = torch.empty(0)  # (E,)

    def fit(self, emb: torch.Tensor) -> "LSHTokenizer":
        x = self._check_emb(emb)
        gen = torch.Generator().manual_seed(self.seed)
        m, e = self.num_levels * self.bits, x.shape[1]
        w = torch.randn(m, e, generator=gen)
        if m <= e:  # orthonormal rows: independent bits and an exact decode
            w = torch.linalg.qr(w.T).Q.T
        self.planes, self.mean, self.fitted = w, x.mean(0), True
        return self

    def encode(self, emb: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        bits = ((self._check_emb(emb) - self.mean) @ self.planes.T > 0).long()  # (N, L*bits)
        weights = 2 ** torch.arange(self.bits - 1, -1, -1)
        return (bits.view(len(bits), self.num_levels, self.bits) * weights).sum(-1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        shifts = torch.arange(self.bits - 1, -1, -1)
        bits = (codes.long().cpu().unsqueeze(-1) >> shifts) & 1  # (N, L, bits)
        signs = bits.view(len(codes), -1).float() * 2 - 1
        return self.mean + signs @ torch.linalg.pinv(self.planes).T

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"planes": self.planes, "mean": self.mean}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.planes, self.mean = state["planes"], state["mean"]
