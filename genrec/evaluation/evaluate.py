"""One evaluator for every model: score matrices (ID models) or ranked lists (generative models) -> metrics.

Under data parallelism each process ranks its shard; ``gather_for_metrics`` collects the per-user ranks and drops
the samples the sampler repeated to even out the shards, so every user counts exactly once.

A long evaluation (beam search over every user of a large catalog can take hours on a CPU) can keep its finished
batches in a ``partial`` file: an interrupted evaluation started again with the same key skips them and ends with
the metrics of an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import os
import time

import torch
from tqdm.auto import tqdm

from ..console import interactive

from .metrics import (drop_seen_items, list_validity, mask_seen_scores, metrics_from_ranks, ranks_from_lists,
                      ranks_from_scores, standard_errors)


def ranks_by(net) -> str:
    """How the evaluator ranks a model: "score" (a score per item) or "list" (``recommend``'s top-K list).

    Every ``Recommender`` states it (``ranking``, ``models/base.py``); for other modules ``score`` decides.
    """
    return getattr(net, "ranking", "score" if hasattr(net, "score") else "list")


@torch.no_grad()
def evaluate(model, loader, accelerator, ks: list[int], num_items: int, desc: str = "eval",
             progress: bool = True, exclude_history: bool = False, partial_dir: str | None = None,
             partial_key: dict | None = None, save_seconds: float = 300.0) -> dict:
    """Rank every example's target over the full catalog and return Recall/NDCG@K plus list validity counts.

    Args:
        model: a prepared model; its unwrapped module provides ``score(batch)`` or ``recommend(batch, k)``.
        loader: a prepared loader of ``{"user", "history", "target"}`` batches.
        exclude_history: rank only items outside the user's history (RecBole / RePlay "filter seen items"): every
            item before the target (``batch["seen"]``, else the capped ``history``). Score models get ``-inf`` on
            seen items; generative models are asked for ``max(ks) + T`` items (T = history columns, so their beam
            widens to at least that) and seen items are dropped from the list.
        partial_dir: a folder for the finished batches (gathered ranks; written by the main process every
            ``save_seconds``, removed at the end) in a file named by a hash of the key: ``partial_key`` (what
            identifies the weights and inputs, the eval config) + the loader's length, the processes, ``ks``, the
            protocol, the precision and the device type. A file with the same key is resumed: its batches are not
            scored again.
    Returns:
        {"recall@5": ..., "ndcg@5": ..., ..., "users": n, "recall@5_se": binomial standard error of recall@5
        (sqrt(p (1 - p) / n)), "ndcg@5_se": that of NDCG@5 (per-user s.d. / sqrt(n)), ..., "invalid_ids": n,
        "duplicate_ids": n}; with
        ``exclude_history`` also "seen_targets": targets that were in their user's history (ranked as misses);
        after a resume also "resumed_batches" (batches scored by the interrupted process) and "eval_commits" (the
        code commits that scored the batches, oldest first).
    """
    from ..training.distributed import gathered

    net = accelerator.unwrap_model(model)
    was_training = net.training
    net.eval()
    # the training precision (accelerate autocasts only the prepared forward); FSDP: whole weights on every rank
    store = None
    if partial_dir:
        key = {**(partial_key or {}), "batches": len(loader), "processes": accelerator.num_processes,
               "ks": list(ks), "exclude_history": exclude_history, "precision": str(accelerator.mixed_precision),
               "device": accelerator.device.type}
        store = PartialEval(partial_dir, key, accelerator, save_seconds)
    with gathered(model), accelerator.autocast():
        out = _evaluate(net, loader, accelerator, ks, num_items, desc, progress, exclude_history, store)
    net.train(was_training)
    return out


PARTIAL_GLOB = "eval-*.partial.pt"  # every partial evaluation file of a folder


class PartialEval:
    """The finished batches of one evaluation on disk: ``{"key", "batches", "ranks", "validity", "seen"}`` in
    ``<folder>/eval-<hash of the key>.partial.pt``, so evaluations of other weights or settings never share a file.

    Every process reads the file, then all wait, so none starts (or the main process writes) before all have read;
    only the main process writes, atomically (a temporary file of its own, then ``os.replace``). An unreadable file
    is ignored with a warning; a folder that cannot be written to only stops the saving. The file also lists the
    code commits that scored its batches (the key leaves the code out, so a test resumes across commits): a resumed
    evaluation reports them with the number of batches it did not score again.
    """

    def __init__(self, folder: str, key: dict, accelerator, save_seconds: float):
        self.key = json.loads(json.dumps(key, sort_keys=True))
        digest = hashlib.sha1(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:12]
        self.path = os.path.join(folder, f"eval-{digest}.partial.pt")
        self.writer, self.save_seconds, self.print = accelerator.is_main_process, save_seconds, accelerator.print
        from ..training.records import git_commit

        self.commit = git_commit()
        self.last = time.monotonic()
        self.done = {"batches": 0, "ranks": [], "validity": [], "seen": [], "commits": []}
        if os.path.exists(self.path):
            try:
                saved = torch.load(self.path, map_location="cpu", weights_only=True)
            except Exception as e:  # a torn or foreign file: score everything again
                self.print(f"warning: ignoring unreadable partial evaluation {self.path}: {e}")
            else:
                if saved.get("key") == self.key:
                    self.done = {"commits": [], **saved}
        accelerator.wait_for_everyone()

    def maybe_save(self, batches: int, total: int, ranks: list, validity: list, seen: list) -> None:
        if not self.writer or batches >= total or time.monotonic() - self.last < self.save_seconds:
            return
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            torch.save({"key": self.key, "batches": batches, "ranks": [r.cpu() for r in ranks],
                        "validity": [v.cpu() for v in validity], "seen": [x.cpu() for x in seen],
                        "commits": self.commits()}, tmp)
            os.replace(tmp, self.path)
        except OSError as e:
            self.print(f"warning: cannot keep partial evaluation results in {self.path} ({e}); going on without")
            self.writer = False
        self.last = time.monotonic()

    def commits(self) -> list[str]:
        """The commits that scored the batches so far, oldest first."""
        saved = list(self.done["commits"])
        return saved if saved and saved[-1] == self.commit else saved + [self.commit]

    def finish(self) -> None:
        if self.writer:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass


def _evaluate(net, loader, accelerator, ks, num_items, desc, progress, exclude_history, store=None) -> dict:
    k = max(ks)
    ranks, validity, seen = [], [], []
    skip = 0
    if store is not None:  # batches an interrupted evaluation finished
        skip = int(store.done["batches"])
        ranks, validity, seen = ([t.to(accelerator.device) for t in store.done[name]]
                                 for name in ("ranks", "validity", "seen"))
    show = progress and accelerator.is_local_main_process and interactive()
    for i, batch in enumerate(tqdm(loader, desc=desc, disable=not show, leave=False)):
        if i < skip:
            continue
        history = batch["history"]
        past = batch.get("seen", history)  # every item before the target when the loader provides it
        if exclude_history:
            seen.append(accelerator.gather_for_metrics((past == batch["target"][:, None]).any(1)))
        if ranks_by(net) == "score":
            scores = net.score(batch)
            r = ranks_from_scores(mask_seen_scores(scores, past) if exclude_history else scores, batch["target"])
        else:
            want = k + history.shape[1] if exclude_history else k
            items, _ = net.recommend(batch, want)  # the model's beam width comes from its config (eval.beam_size)
            if items.shape[1] > want:
                raise ValueError(f"recommend returned {items.shape[1]} items for k={want}")
            if exclude_history:
                items = drop_seen_items(items, past, k)
            r = ranks_from_lists(items, batch["target"])
            validity.append(accelerator.gather_for_metrics(list_validity(items, num_items)))
        ranks.append(accelerator.gather_for_metrics(r))  # per batch: drops the last batch's padding duplicates
        if store is not None:
            store.maybe_save(i + 1, len(loader), ranks, validity, seen)
    if store is not None:
        store.finish()
    all_ranks = torch.cat(ranks) if ranks else torch.empty(0, dtype=torch.long)
    out = metrics_from_ranks(all_ranks.cpu(), ks)
    out["users"] = int(all_ranks.numel())
    out.update(standard_errors(all_ranks.cpu(), ks))  # how far a subset's figure can sit from the full one
    if validity:
        counts = torch.cat(validity).sum(0).tolist()
        out["invalid_ids"], out["duplicate_ids"] = int(counts[0]), int(counts[1])
    if seen:
        out["seen_targets"] = int(torch.cat(seen).sum())
    if skip:  # resumed: say how much an earlier process scored, and with which code
        out["resumed_batches"], out["eval_commits"] = skip, store.commits()
    return out
