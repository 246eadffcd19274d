"""The contract between models, the training loop and the evaluator.

Every model is an ``nn.Module`` built by ``from_config(cfg, ctx)`` and registered in ``genrec.models.MODELS``.

Batches (built by ``genrec.data.collate``; item ids are 1..N, 0 is padding; histories are LEFT-padded so the
most recent item is always the last column):

* ``example_mode = "next_item"`` (generative models, and evaluation of every model):
  ``{"user": (B,), "history": (B, T), "target": (B,)}``
* ``example_mode = "sequence"`` (SASRec-style training on every position):
  ``{"user": (B,), "input": (B, T), "labels": (B, T)}``; labels are 0 where there is no target.

Training calls ``model(batch) -> Output(loss, logits)``. Evaluation calls exactly one of
``score(batch) -> (B, N + 1)`` (ID models: a score per item, column 0 ignored) or
``recommend(batch, k) -> (items (B, k), scores (B, k))`` (generative models: distinct item ids, best first;
0 where fewer than k valid items were found).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch


@dataclass
class Output:
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


@dataclass
class ModelContext:
    """What a model may need to know about the data, derived from artifacts rather than asked of the user."""

    num_items: int  # N; item ids are 1..N
    num_users: int
    # Semantic IDs for generative models: (N + 1, L) codes, row 0 (padding) is all zeros and never used.
    sid_codes: torch.Tensor | None = None
    codebook_sizes: list[int] = field(default_factory=list)  # K_l per level, after the collision digit
    item_texts: list[dict] | None = None  # the item table (row i = item i + 1), for models that read text
    extra: dict[str, Any] = field(default_factory=dict)


class Recommender(Protocol):
    example_mode: str  # "next_item" | "sequence"

    def forward(self, batch: dict[str, torch.Tensor]) -> Output: ...


ModelFactory = Callable[[Any, ModelContext], torch.nn.Module]
