"""Training orders that depend only on (seed, epoch), so a resumed run sees the batches it would have seen."""
from __future__ import annotations

import torch

class BucketShuffle(torch.utils.data.Sampler):
    """Length-bucketed random batches that depend only on (seed, epoch): each epoch shuffles the rows, cuts the
    order into pools of ``pool`` batches, sorts each pool by row length, cuts it into batches and shuffles the
    batches. Every row is visited exactly once per epoch; a batch holds rows of similar length, so little of it is
    padding (``train.bucket_by_length``; the dataset gives ``lengths()``). The one short batch (rows not a multiple
    of ``batch_size``) comes last: anywhere else it would shift every later DataLoader batch across two buckets.
    """

    def __init__(self, lengths, batch_size: int, seed: int, pool: int = 50):
        self.lengths = torch.as_tensor(lengths)
        self.batch_size, self.seed, self.pool, self.epoch = batch_size, seed, pool, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g)
        batches = []
        for chunk in order.split(self.batch_size * self.pool):
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            batches += list(chunk.split(self.batch_size))
        short = [b for b in batches if len(b) < self.batch_size]  # at most one: the last pool's remainder
        full = [b for b in batches if len(b) == self.batch_size]
        return iter(torch.cat([full[i] for i in torch.randperm(len(full), generator=g)] + short).tolist())


class EpochShuffle(torch.utils.data.Sampler):
    """A random order that depends only on (seed, epoch), so a resumed run sees the batches it would have seen."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


__all__ = ["BucketShuffle", "EpochShuffle"]
