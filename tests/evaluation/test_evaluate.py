import json
import math
import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
from ddp_eval_script import run  # noqa: E402


@pytest.mark.slow
def test_data_parallel_eval_counts_every_user_once(tmp_path):
    single = run(num_users=599)
    assert single["users"] == 599
    out = tmp_path / "ddp.json"
    env = {**os.environ, "PYTHONPATH": os.path.join(HERE, "..", "..") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(HERE, "ddp_eval_script.py"), str(out)]
    done = subprocess.run(cmd, env=env, timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = json.load(open(out))
    assert ddp["processes"] == 2
    assert ddp["users"] == 599  # 599 users over 2 processes: the padded duplicate is dropped, none lost
    for key in ("recall@5", "ndcg@5", "recall@10", "ndcg@10"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-12)


class _ScoreModel(torch.nn.Module):
    """Scores item i as i (higher ids rank first)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def score(self, batch):
        return torch.arange(self.n + 1, dtype=torch.float).expand(batch["history"].shape[0], -1)


class _ListModel(torch.nn.Module):
    """The same ranking as a ranked list (a generative model); records the k it was asked for."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def recommend(self, batch, k):
        self.asked = k
        B = batch["history"].shape[0]
        return torch.arange(self.n, self.n - k, -1).expand(B, -1), torch.zeros(B, k)


@pytest.mark.parametrize("model_cls", [_ScoreModel, _ListModel])
def test_exclude_history_in_the_evaluator(model_cls):
    from accelerate import Accelerator

    from genrec.evaluation import evaluate

    n = 20
    batches = [{"user": torch.tensor([0, 1]), "history": torch.tensor([[0, 20, 19], [0, 0, 3]]),
                "target": torch.tensor([18, 17])}]
    acc = Accelerator(cpu=True)
    model = model_cls(n)
    plain = evaluate(model, batches, acc, [1, 5], n, progress=False)
    seen = evaluate(model, batches, acc, [1, 5], n, progress=False, exclude_history=True)
    # user 0: target 18 is third behind 20 and 19 (both seen); user 1: target 17 is fourth, nothing ahead is seen
    assert plain["recall@1"] == 0.0 and plain["recall@5"] == 1.0
    assert seen["recall@1"] == 0.5 and seen["ndcg@5"] == pytest.approx((1.0 + 1 / math.log2(5)) / 2)
    assert seen["seen_targets"] == 0 and "seen_targets" not in plain
    if model_cls is _ListModel:
        assert model.asked == 5 + 3  # max(ks) + history columns


class _Interrupted(Exception):
    pass


class _FlakyListModel(torch.nn.Module):
    """Ranks items by a hash of the history (a list model, with an invalid id and a duplicate in every list); dies
    at batch ``die_at``; counts its batches."""

    def __init__(self, n: int, die_at: int | None = None):
        super().__init__()
        self.n, self.die_at, self.calls = n, die_at, 0

    def recommend(self, batch, k):
        if self.die_at is not None and self.calls == self.die_at:
            raise _Interrupted
        self.calls += 1
        B = batch["history"].shape[0]
        shift = batch["history"].sum(1, keepdim=True) % self.n
        items = (torch.arange(k)[None] + shift) % self.n + 1
        items[:, 1] = self.n + 5  # invalid
        items[:, 2] = items[:, 0]  # a duplicate
        return items, torch.zeros(B, k)


def test_an_interrupted_evaluation_resumes_its_finished_batches_to_the_same_metrics(tmp_path, monkeypatch):
    """With a partial folder, a kill after 3 of 8 batches and a restart score only the 5 left and give the metrics
    (validity and seen-target counts included) of an uninterrupted evaluation, plus how many batches were resumed
    and the commits that scored them; the file is gone at the end; another key starts from scratch."""
    import genrec.training.records as records

    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from genrec.data import EvalDataset, Split, collate
    from genrec.data.tiny import make_tiny
    from genrec.evaluation import evaluate

    acc = Accelerator(cpu=True)
    data = make_tiny(num_users=120)
    loader = DataLoader(EvalDataset(Split(data, 20), "test"), batch_size=16, collate_fn=collate)  # 8 batches
    n = data.num_items
    common = dict(progress=False, exclude_history=True)
    whole = evaluate(_FlakyListModel(n), loader, acc, [5, 10], n, **common)
    assert whole["invalid_ids"] > 0 and whole["duplicate_ids"] > 0 and "seen_targets" in whole
    kw = dict(common, partial_dir=str(tmp_path), partial_key={"weights": 1}, save_seconds=0.0)
    monkeypatch.setattr(records, "git_commit", lambda: "old")
    with pytest.raises(_Interrupted):
        evaluate(_FlakyListModel(n, die_at=3), loader, acc, [5, 10], n, **kw)
    (path,) = tmp_path.glob("eval-*.partial.pt")
    assert torch.load(path, weights_only=True)["batches"] == 3
    monkeypatch.setattr(records, "git_commit", lambda: "new")  # resumed under other code: the record says so
    again = _FlakyListModel(n)
    resumed = evaluate(again, loader, acc, [5, 10], n, **kw)
    assert resumed.pop("resumed_batches") == 3 and resumed.pop("eval_commits") == ["old", "new"]
    assert again.calls == 5 and resumed == whole and resumed["users"] == 120
    assert not list(tmp_path.iterdir())  # removed at the end
    with pytest.raises(_Interrupted):
        evaluate(_FlakyListModel(n, die_at=3), loader, acc, [5, 10], n, **kw)
    other = _FlakyListModel(n)
    assert evaluate(other, loader, acc, [5, 10], n, **{**kw, "partial_key": {"weights": 2}}) == whole
    assert other.calls == 8  # other weights: another file, nothing reused
    path.write_bytes(b"torn")  # an unreadable file of the same key: ignored, everything scored again
    torn = _FlakyListModel(n)
    assert evaluate(torn, loader, acc, [5, 10], n, **kw) == whole and torn.calls == 8
