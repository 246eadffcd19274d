"""Run by test_evaluate.py under `accelerate launch --cpu --num_processes 2`: evaluate a fixed scorer, dump JSON."""
import json
import sys

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from genrec.data import EvalDataset, Split, collate
from genrec.data.tiny import make_tiny
from genrec.evaluation import evaluate


class HashScorer(torch.nn.Module):
    """Scores depend only on the history, so every process and the single-process run agree."""

    def __init__(self, num_items):
        super().__init__()
        self.emb = torch.nn.Embedding(num_items + 1, 8)
        torch.nn.init.normal_(self.emb.weight, generator=torch.Generator().manual_seed(0))

    def score(self, batch):
        return self.emb(batch["history"]).sum(1) @ self.emb.weight.T


def run(out_path=None, num_users=599):
    accelerator = Accelerator(cpu=True)
    data = make_tiny(num_users=num_users)
    loader = accelerator.prepare_data_loader(DataLoader(EvalDataset(Split(data, 20), "test"), batch_size=64,
                                                        collate_fn=collate))
    metrics = evaluate(HashScorer(data.num_items), loader, accelerator, [5, 10], data.num_items, progress=False)
    if out_path and accelerator.is_main_process:
        json.dump({**metrics, "processes": accelerator.num_processes}, open(out_path, "w"))
    return metrics


if __name__ == "__main__":
    run(sys.argv[1])
