"""Most-popular baseline: one learned score per item, the same for every user.

Trained by the common loop with full-softmax cross-entropy on every training position, whose optimum is the log
of each item's training frequency, so the ranking converges to training popularity. The floor any sequential
model must clear on the same splits and evaluator.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import ModelContext, Output, Recommender


class Popularity(Recommender):
    example_mode = "sequence"

    def __init__(self, num_items: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_items))  # item i+1 <-> column i

    @classmethod
    def from_config(cls, cfg, ctx: ModelContext) -> "Popularity":
        return cls(ctx.num_items)

    def forward(self, batch: dict[str, torch.Tensor]) -> Output:
        labels = batch["labels"]
        targets = labels[labels > 0] - 1
        return Output(loss=F.cross_entropy(self.logits.expand(targets.shape[0], -1), targets))

    def score(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, N + 1) scores; column 0 (padding) is -inf."""
        s = torch.cat([self.logits.new_full((1,), float("-inf")), self.logits])
        return s.expand(batch["history"].shape[0], -1)
