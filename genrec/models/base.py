"""The contract between models, the training loop and the evaluator: ``Recommender``, the base of every model.

Every model is a ``Recommender`` built by ``from_config(cfg, ctx)`` and registered in ``genrec.models.MODELS``;
the loop and the evaluator call only the methods below (defaults here, overridden where a model needs to).

Batches (built by ``genrec.data.collate``; item ids are 1..N, 0 is padding; histories are LEFT-padded so the
most recent item is always the last column):

* evaluation, for every model: ``{"user": (B,), "history": (B, T), "target": (B,)}``
* training, by ``example_mode`` (the default ``train_dataset``): ``"next_item"`` gives the evaluation layout, one
  example per training prefix (TIGER); ``"sequence"`` gives ``{"user": (B,), "input": (B, T), "labels": (B, T)}``,
  one window per user with a label at every position (0 where there is none; SASRec).

Training calls ``model(batch) -> Output(loss, logits)``. Evaluation ranks by ``ranking``: ``"score"`` calls
``score(batch) -> (B, N + 1)`` (a score per item, column 0 ignored; exact full-catalog ranking), ``"list"`` calls
``recommend(batch, k) -> (items (B, k), scores (B, k))`` (distinct item ids, best first; 0 where fewer than k
valid items were found).

Generative models derive from ``genrec.models.vocab.SidModel`` (a ``Recommender`` holding the shared
semantic-ID vocabulary).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn


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


class Recommender(nn.Module):
    """Base of every model: each method the training loop or the evaluator may call, with its default."""

    example_mode: str = "sequence"  # "next_item" | "sequence": the training examples of the default train_dataset
    ranking: str = "score"  # "score": rank by score(batch) | "list": rank by recommend(batch, k)
    # True (set by ``train.compile``): batches keep their padded width, so no step reads lengths back to the host
    # to trim them; one compiled graph serves every batch and the step can be captured as a CUDA graph.
    static_shapes: bool = False
    # The config key that makes this model read each interaction's timestamp ('' = it reads none): the data must
    # have them, and batches then carry ``*_times`` (``genrec.data.Split``)
    times_for: str = ""

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        raise NotImplementedError

    def train_dataset(self, split):
        """The training Dataset over a ``genrec.data.Split``; default: ``TRAIN_DATASETS[example_mode]``."""
        from ..data import TRAIN_DATASETS

        return TRAIN_DATASETS[self.example_mode](split)

    def collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """Training batches from a list of examples (evaluation batches always use ``genrec.data.collate``)."""
        from ..data import collate

        return collate(examples)

    def score(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, N + 1) score of every item as the next one after ``batch["history"]`` (``ranking = "score"``)."""
        raise NotImplementedError(f"{type(self).__name__} ranks by recommend(), not score()")

    def recommend(self, batch: dict[str, torch.Tensor], k: int, beam_size: int | None = None):
        """Top-k distinct items and their scores, each (B, k), best first (``ranking = "list"``).

        ``beam_size`` overrides the configured search width for this call (at least k is used).
        """
        raise NotImplementedError(f"{type(self).__name__} ranks by score(), not recommend()")

    def token_counts(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int] | None:
        """(real tokens as a 0-dim tensor, positions computed) of a training batch: the loop's padding ratio and
        real tokens/s. Read from ``attention_mask``, packed ``doc_ids`` (-1 = empty), or the 0-padded ``input`` /
        ``history``; None where a batch has none of them."""
        for key, pad in (("attention_mask", 0), ("doc_ids", -1), ("input", 0), ("history", 0)):
            if key in batch:
                x = batch[key]
                return (x != pad).sum(), x.numel()
        return None

    def record_extras(self, run_dir: str, write: bool = True) -> dict:
        """Extra fields for the result record, called after testing on every process with whole weights (under
        FSDP too); files (e.g. a saved adapter) are written only where ``write`` (the main process)."""
        return {}


ModelFactory = Callable[[Any, ModelContext], torch.nn.Module]
