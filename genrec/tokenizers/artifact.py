"""The semantic-ID artifact: codes plus the metadata every later stage reads instead of asking the user.

``codes`` (N, L) long, row i = item i+1, L counting the collision digit; ``codebook_sizes`` per level after
dedup; ``num_items``; ``embedding_sha256`` of the matrix the codes came from; the tokenizer kind and config;
the dataset. Saved as one ``.pt`` (codes + metadata) with a ``.json`` copy of the metadata for people.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .dedup import next_collision_digits

FORMAT_VERSION = 1


@dataclass
class SemanticIds:
    codes: torch.Tensor  # (N, L) long, row i = item i+1
    codebook_sizes: list[int]  # K_l per level, the last one the collision digit's size when dedup is on
    dataset: str = ""
    embedding_sha256: str = ""
    tokenizer: str = ""  # kind
    tokenizer_config: dict[str, Any] = field(default_factory=dict)
    dedup: bool = True
    tokenizer_path: str = ""  # the fitted tokenizer (encodes new items without refitting)
    extra: dict[str, Any] = field(default_factory=dict)  # timings, report summary

    def __post_init__(self):
        if self.codes.ndim != 2 or self.codes.shape[1] != len(self.codebook_sizes):
            raise ValueError(f"codes {tuple(self.codes.shape)} do not match codebook_sizes {self.codebook_sizes}")
        for level, k in enumerate(self.codebook_sizes):
            col = self.codes[:, level]
            assert len(col) == 0 or (0 <= int(col.min()) and int(col.max()) < k), f"level {level} out of [0, {k})"

    @property
    def num_items(self) -> int:
        return self.codes.shape[0]

    @property
    def num_levels(self) -> int:
        return self.codes.shape[1]

    def padded(self) -> torch.Tensor:
        """(N+1, L) with row 0 = padding (zeros), row i = item i: the ``ctx.sid_codes`` layout."""
        return torch.cat([torch.zeros(1, self.num_levels, dtype=torch.long), self.codes])

    def metadata(self) -> dict[str, Any]:
        meta = {k: v for k, v in asdict(self).items() if k != "codes"}
        return {"format_version": FORMAT_VERSION, "num_items": self.num_items, "num_levels": self.num_levels, **meta}

    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        torch.save({"codes": self.codes.long().cpu(), "meta": json.dumps(self.metadata())}, tmp)
        os.replace(tmp, path)
        with open(os.path.splitext(path)[0] + ".json", "w") as f:
            json.dump(self.metadata(), f, indent=1)

    @classmethod
    def load(cls, path: str) -> "SemanticIds":
        if not os.path.isfile(path):
            raise FileNotFoundError(f"semantic-ID artifact {path!r} does not exist; build it with `genrec sids build`")
        from ..io import torch_load

        obj = torch_load(path, "semantic-ID artifact", "delete it; the next run rebuilds it")
        meta = json.loads(obj["meta"])
        for k in ("format_version", "num_items", "num_levels"):
            meta.pop(k, None)
        return cls(codes=obj["codes"], **meta)

    def add_items(self, prefixes: torch.Tensor, grow: bool = False) -> torch.Tensor:
        """Append new items (ids num_items+1, ...) given their tokenizer codes (M, L-1), without refitting.

        Each new item gets the next free collision digit of its prefix. If that digit is >= the last
        codebook size, the ID does not fit the vocabulary models were built with: this raises unless
        ``grow=True``, which enlarges ``codebook_sizes[-1]`` (models must then resize their last-level table).

        Returns:
            (M, L) the new items' full codes.
        Raises:
            ValueError: a digit overflows and grow is False, or the artifact has no collision digit.
        """
        if not self.dedup:
            raise ValueError("this artifact has no collision digit (tokenizer.dedup=false); rebuild with dedup")
        digits = next_collision_digits(self.codes, prefixes.long())
        need = int(digits.max()) + 1 if len(digits) else 0
        if need > self.codebook_sizes[-1] and not grow:
            raise ValueError(
                f"new items need collision digit {need - 1} but the last codebook has size "
                f"{self.codebook_sizes[-1]}; pass grow=True (and resize the model's last level) or rebuild the IDs"
            )
        new = torch.cat([prefixes.long(), digits.unsqueeze(1)], 1)
        self.codes = torch.cat([self.codes, new])
        self.codebook_sizes = [*self.codebook_sizes[:-1], max(self.codebook_sizes[-1], need)]
        return new

    def add_embeddings(self, emb: torch.Tensor, grow: bool = False) -> torch.Tensor:
        """Encode new items' content embeddings (M, E) with the saved tokenizer (no refit) and append them;
        see ``add_items`` for the collision digit. Returns their codes (M, L)."""
        from .base import load_tokenizer

        if not self.tokenizer_path or not os.path.isfile(self.tokenizer_path):
            raise FileNotFoundError(f"fitted tokenizer {self.tokenizer_path!r} not found; rebuild the semantic IDs")
        prefixes = load_tokenizer(self.tokenizer_path).encode(emb)
        return self.add_items(prefixes, grow=grow) if self.dedup else self._append_raw(prefixes)

    def _append_raw(self, codes: torch.Tensor) -> torch.Tensor:
        self.codes = torch.cat([self.codes, codes.long()])
        return codes.long()
