"""One evaluator for every model: score matrices (ID models) or ranked lists (generative models) -> metrics.

Under data parallelism each process ranks its shard; ``gather_for_metrics`` collects the per-user ranks and drops
the samples the sampler repeated to even out the shards, so every user counts exactly once.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ..console import interactive

from .metrics import (drop_seen_items, list_validity, mask_seen_scores, metrics_from_ranks, ranks_from_lists,
                      ranks_from_scores)


def ranks_by(net) -> str:
    """How the evaluator ranks a model: "score" (a score per item) or "list" (``recommend``'s top-K list).

    Every ``Recommender`` states it (``ranking``, ``models/base.py``); for other modules ``score`` decides.
    """
    return getattr(net, "ranking", "score" if hasattr(net, "score") else "list")


@torch.no_grad()
def evaluate(model, loader, accelerator, ks: list[int], num_items: int, desc: str = "eval",
             progress: bool = True, exclude_history: bool = False) -> dict:
    """Rank every example's target over the full catalog and return Recall/NDCG@K plus list validity counts.

    Args:
        model: a prepared model; its unwrapped module provides ``score(batch)`` or ``recommend(batch, k)``.
        loader: a prepared loader of ``{"user", "history", "target"}`` batches.
        exclude_history: rank only items outside the user's history (RecBole / RePlay "filter seen items"): every
            item before the target (``batch["seen"]``, else the capped ``history``). Score models get ``-inf`` on
            seen items; generative models are asked for ``max(ks) + T`` items (T = history columns, so their beam
            widens to at least that) and seen items are dropped from the list.
    Returns:
        {"recall@5": ..., "ndcg@5": ..., ..., "users": n, "recall@5_se": binomial standard error of recall@5
        (sqrt(p (1 - p) / n)), ..., "invalid_ids": n, "duplicate_ids": n}; with
        ``exclude_history`` also "seen_targets": targets that were in their user's history (ranked as misses).
    """
    from ..training.distributed import gathered

    net = accelerator.unwrap_model(model)
    was_training = net.training
    net.eval()
    # the training precision (accelerate autocasts only the prepared forward); FSDP: whole weights on every rank
    with gathered(model), accelerator.autocast():
        out = _evaluate(net, loader, accelerator, ks, num_items, desc, progress, exclude_history)
    net.train(was_training)
    return out


def _evaluate(net, loader, accelerator, ks, num_items, desc, progress, exclude_history) -> dict:
    k = max(ks)
    ranks, validity, seen = [], [], []
    show = progress and accelerator.is_local_main_process and interactive()
    for batch in tqdm(loader, desc=desc, disable=not show, leave=False):
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
    all_ranks = torch.cat(ranks) if ranks else torch.empty(0, dtype=torch.long)
    out = metrics_from_ranks(all_ranks.cpu(), ks)
    out["users"] = n = int(all_ranks.numel())
    for kk in ks:  # binomial standard error of each recall: how far a subset's figure can sit from the full one
        p = out[f"recall@{kk}"]
        out[f"recall@{kk}_se"] = (p * (1 - p) / n) ** 0.5 if n else float("nan")
    if validity:
        counts = torch.cat(validity).sum(0).tolist()
        out["invalid_ids"], out["duplicate_ids"] = int(counts[0]), int(counts[1])
    if seen:
        out["seen_targets"] = int(torch.cat(seen).sum())
    return out
