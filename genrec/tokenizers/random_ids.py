"""Random semantic IDs, the "Random ID" baseline of TIGER's Table 2: codes that carry no content.

Each level's code is drawn from a hash of the item's embedding bytes and the seed, so the same embedding
always gets the same code (fitted or new item, no state to fit), while the codes are independent of what the
embedding means. There is nothing to decode.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from .base import Tokenizer


class RandomTokenizer(Tokenizer):
    kind = "random"

    def fit(self, emb: torch.Tensor) -> "RandomTokenizer":
        self._check_emb(emb)
        self.fitted = True
        return self

    def encode(self, emb: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        x = self._check_emb(emb).numpy()
        out = np.empty((len(x), self.num_levels), dtype=np.int64)
        for i, row in enumerate(x):
            digest = hashlib.blake2b(row.tobytes(), digest_size=8 * self.num_levels, key=str(self.seed).encode())
            words = np.frombuffer(digest.digest(), dtype=np.uint64)
            out[i] = (words % np.uint64(self.codebook_size)).astype(np.int64)
        return torch.from_numpy(out)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("random IDs carry no content, so they cannot be decoded into an embedding")

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass
