"""Adding a model is one class plus one registry entry: a toy model trains, evaluates and writes a record."""
import pytest
import torch
import torch.nn.functional as F

from genrec.config import load_config
from genrec.models import MODELS, Output, Recommender
from genrec.training import loop


class LastItemBigram(Recommender):
    """Scores the next item from the last one alone: a learned (N + 1, N + 1) table (first-order Markov)."""

    example_mode = "sequence"

    def __init__(self, num_items: int):
        super().__init__()
        self.table = torch.nn.Embedding(num_items + 1, num_items + 1)

    @classmethod
    def from_config(cls, cfg, ctx):
        return cls(ctx.num_items)

    def forward(self, batch):
        mask = batch["labels"] > 0
        return Output(loss=F.cross_entropy(self.table(batch["input"][mask]), batch["labels"][mask]))

    def score(self, batch):
        return self.table(batch["history"][:, -1])


@pytest.mark.slow
def test_a_model_added_by_one_registry_entry_trains_and_is_evaluated(tmp_path, monkeypatch):
    monkeypatch.setitem(MODELS, "bigram", lambda cfg, ctx: LastItemBigram.from_config(cfg, ctx))
    cfg = load_config(["configs/tiny.yaml"], ["model.kind=bigram", f"output_dir={tmp_path}/runs",
                                              f"results_dir={tmp_path}/results", "train.epochs=3",
                                              "train.progress=false", "train.lr=0.05"])
    record = loop.train(cfg)
    assert record["model"] == "bigram" and record["users_evaluated"] == 600
    # the tiny shop's next item is the last item's successor 70 % of the time; random ranking gives ~0.02
    assert record["metrics"]["ndcg@10"] > 0.25
