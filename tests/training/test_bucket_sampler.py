"""Length-bucketed batches: every row exactly once per epoch, reproducible per (seed, epoch), little padding."""
import numpy as np
import pytest
import torch

from genrec.config import load_config
from genrec.training import loop
from genrec.training.loop import BucketShuffle


def test_every_row_once_per_epoch_and_the_order_depends_on_seed_and_epoch_only():
    lengths = np.random.default_rng(0).integers(1, 21, size=1003)
    s = BucketShuffle(lengths, batch_size=16, seed=3, pool=8)
    for epoch in range(3):
        s.set_epoch(epoch)
        order = list(s)
        assert sorted(order) == list(range(1003))
        again = BucketShuffle(lengths, 16, 3, 8)  # a resumed run builds a new sampler
        again.set_epoch(epoch)
        assert list(again) == order
    s.set_epoch(1)
    a = list(s)
    s.set_epoch(2)
    assert a != list(s)


def test_buckets_cut_padding():
    lengths = np.random.default_rng(0).integers(1, 21, size=4096)

    def padded(order):
        return sum(int(lengths[order[i:i + 64]].max()) * len(order[i:i + 64]) for i in range(0, len(order), 64))

    random_order = torch.randperm(4096, generator=torch.Generator().manual_seed(0)).tolist()
    assert padded(list(BucketShuffle(lengths, 64, 0))) < 0.7 * padded(random_order)


def test_loader_batches_are_the_buckets_when_rows_are_not_a_multiple_of_the_batch():
    """One pool holding every row: each bucket is a run of 16 consecutive lengths. The DataLoader's batches must
    be those buckets; a short bucket anywhere but last would shift every later batch across two buckets."""
    lengths = torch.randperm(1003, generator=torch.Generator().manual_seed(0)).numpy()  # distinct lengths
    sampler = BucketShuffle(lengths, batch_size=16, seed=0, pool=100)
    batches = [lengths[b.numpy()] for b in torch.utils.data.DataLoader(range(1003), 16, sampler=sampler)]
    for b in batches[:-1]:
        assert len(b) == 16 and b.min() % 16 == 0 and b.max() - b.min() == 15
    assert sorted(batches[-1].tolist()) == list(range(992, 1003))  # 1003 = 62 x 16 + 11


@pytest.mark.slow
def test_training_with_length_buckets_runs(tmp_path):
    cfg = load_config(["configs/tiny.yaml"], [f"output_dir={tmp_path}/runs", f"results_dir={tmp_path}/results",
                                              "train.progress=false", "train.epochs=2", "train.bucket_by_length=true"])
    assert loop.train(cfg)["metrics"]["ndcg@10"] > 0.1
