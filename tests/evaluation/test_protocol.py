"""Protocol details that once gave silently different numbers: full-history exclusion, fixed user subsets."""
import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from genrec.config import load_config
from genrec.data import EvalDataset, Split, collate
from genrec.data.interactions import InteractionData
from genrec.evaluation import evaluate
from genrec.models.base import Recommender
from genrec.training import loop


class FixedScores(Recommender):
    """Scores item i as i (the highest id ranks first), whatever the history."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def score(self, batch):
        return torch.arange(self.n + 1, dtype=torch.float).expand(batch["history"].shape[0], -1).clone()


def test_exclude_history_masks_every_past_item_not_only_the_capped_window():
    # user 0: items 9, 1, 2, 3 then target 4 (test); history capped at 2 keeps only [2, 3]
    data = InteractionData("toy", [np.array([9, 1, 2, 3, 4])], np.array([0]), [{}] * 9)
    split = Split(data, max_history=2)
    acc = Accelerator(cpu=True)
    loader = DataLoader(EvalDataset(split, "test", with_seen=True), batch_size=1, collate_fn=collate)
    out = evaluate(FixedScores(9), loader, acc, [5], num_items=9, progress=False, exclude_history=True)
    # ranking 8, 7, 6, 5, 4 (9 is masked as seen even though the capped history lacks it): target at rank 5
    assert out["recall@5"] == 1.0 and abs(out["ndcg@5"] - 1 / np.log2(6)) < 1e-9
    capped = DataLoader(EvalDataset(split, "test"), batch_size=1, collate_fn=collate)
    old = evaluate(FixedScores(9), capped, acc, [5], num_items=9, progress=False, exclude_history=True)
    assert old["recall@5"] == 0.0  # the capped history let item 9 take a slot: what the fix changes


def test_subset_users_depend_on_subset_seed_not_on_the_run_seed():
    def users(*overrides):
        cfg = load_config(["configs/tiny.yaml"], ["eval.max_users=50", *overrides])
        data = loop.load_dataset(cfg.data)
        loader = loop._eval_loader(cfg, Split(data, 20), data.num_users, Accelerator(cpu=True), collate, "test", 50)
        return loader.dataset.users.tolist()

    assert users("seed=0") == users("seed=3")
    assert users("eval.subset_seed=1") != users()
