"""Ranking metrics over the full item catalog (pure functions on 0-based ranks).

With ``rank`` the 0-based position of the target in the model's ranking (``inf`` when it is absent):

    Recall@K = mean_u [rank_u < K]            (= HR@K with one target per user)
    NDCG@K   = mean_u [rank_u < K] / log2(rank_u + 2)

(one relevant item, so the ideal DCG is 1). A hit at rank 3 (0-based 2) gives NDCG = 1 / log2(4) = 0.5.
"""
from __future__ import annotations

import torch

MISS = torch.iinfo(torch.int64).max  # rank of a target that is not in the list


def ranks_from_scores(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among all items, ties counted against the target (pessimistic).

    Args:
        scores: (B, N + 1) a score per item; column 0 (padding) is ignored.
        targets: (B,) item ids in 1..N.
    Returns:
        (B,) int64 ranks: the number of other items scored >= the target. A constant model therefore
        gets the worst rank, never a lucky one; NaN scores raise.
    """
    if scores.dim() != 2 or targets.shape != scores.shape[:1]:
        raise ValueError(f"expected scores (B, N+1) and targets (B,), got {tuple(scores.shape)} and {tuple(targets.shape)}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    scores = scores.float()
    target_scores = scores.gather(1, targets[:, None])
    ahead = (scores[:, 1:] >= target_scores).sum(1) - 1  # minus the target itself
    return ahead.long()


def ranks_from_lists(items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based position of each target in a ranked list; ``MISS`` when absent.

    Duplicates and invalid ids (0 or unknown) are not removed: they keep their slots and count as misses, so a
    model cannot gain by repeating items.

    Args:
        items: (B, K) ranked item ids, best first.
        targets: (B,) item ids.
    """
    hit = items == targets[:, None]
    pos = torch.where(hit, torch.arange(items.shape[1], device=items.device), MISS)
    return pos.min(1).values if items.shape[1] else torch.full_like(targets, MISS)


def mask_seen_scores(scores: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """Scores with the items of each user's history set to ``-inf`` (a copy); column 0 (padding) included.

    The "exclude seen items" protocol of RecBole's and RePlay's full-sort evaluation. A target that is itself in
    the history then ranks last: the protocol assumes a user does not consume an item twice.
    """
    return scores.float().scatter(1, history.long(), float("-inf"))


def drop_seen_items(items: torch.Tensor, history: torch.Tensor, k: int) -> torch.Tensor:
    """The first ``k`` items of each ranked list that are not in the user's history (0 where fewer remain).

    Args:
        items: (B, K') ranked item ids, best first, K' >= k.
        history: (B, T) item ids, 0 = padding.
    """
    seen = (items[:, :, None] == history[:, None, :]).any(-1) & (items > 0)
    order = torch.sort(seen.to(torch.int8), dim=1, stable=True).indices  # unseen first, in their ranked order
    kept = items.gather(1, order).masked_fill(seen.gather(1, order), 0)
    return kept[:, :k]


def list_validity(items: torch.Tensor, num_items: int) -> torch.Tensor:
    """Per list: (B, 2) counts of invalid ids (outside 1..N) and of ids repeated within the list."""
    invalid = ((items < 1) | (items > num_items)).sum(1)
    s = items.sort(1).values
    dup = ((s[:, 1:] == s[:, :-1]) & (s[:, 1:] >= 1) & (s[:, 1:] <= num_items)).sum(1)
    return torch.stack([invalid, dup], 1)


def _per_user(ranks: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hit, gain): each user's Recall@K and NDCG@K, as float64."""
    ranks = ranks.double()
    hit = ranks < k
    return hit.double(), torch.where(hit, 1.0 / torch.log2(torch.where(hit, ranks, 0.0) + 2.0), 0.0)


def metrics_from_ranks(ranks: torch.Tensor, ks: list[int]) -> dict[str, float]:
    """Recall@K and NDCG@K for every K in ``ks`` (see module docstring)."""
    if ranks.numel() == 0:
        raise ValueError("no users to evaluate")
    out = {}
    for k in ks:
        hit, gain = _per_user(ranks, k)
        out[f"recall@{k}"] = hit.mean().item()
        out[f"ndcg@{k}"] = gain.mean().item()
    return out


def standard_errors(ranks: torch.Tensor, ks: list[int]) -> dict[str, float]:
    """The standard error over users of each metric: its per-user values' s.d. (over n) / sqrt(n), which for recall
    is the binomial sqrt(r (1 - r) / n). How far a figure on these users can sit from the same model's figure on
    other users of the same kind; the spread over seeds is not in it."""
    n = ranks.numel()
    if n == 0:
        raise ValueError("no users to evaluate")
    out = {}
    for k in ks:
        hit, gain = _per_user(ranks, k)
        out[f"recall@{k}_se"] = hit.std(correction=0).item() / n ** 0.5
        out[f"ndcg@{k}_se"] = gain.std(correction=0).item() / n ** 0.5
    return out
