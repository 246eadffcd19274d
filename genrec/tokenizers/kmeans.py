"""k-means (k-means++ seeding, Lloyd iterations) and a balanced variant: the per-level quantizer of residual
k-means and product quantisation, and the codebook initialiser of RQ-VAE.

Balanced k-means caps every cluster at ceil(N / K) members during fitting (a capacity-constrained
assignment, as used for balanced semantic IDs in e.g. LC-Rec/"balanced RQ-KMeans" variants), which spreads
items evenly over codes and shrinks collision groups.
"""
from __future__ import annotations

import torch


def sq_dists(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (N, K) between rows of x (N, E) and c (K, E)."""
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ c.T + c.pow(2).sum(1)).clamp_min_(0)


def assign(x: torch.Tensor, c: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Nearest centroid index (N,) for each row of x; chunked so memory stays O(chunk * K)."""
    return torch.cat([sq_dists(x[i : i + chunk], c).argmin(1) for i in range(0, len(x), chunk)]) if len(x) else (
        torch.zeros(0, dtype=torch.long)
    )


def kmeans_plusplus(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, 2007): each new centre drawn with probability ~ D(x)^2."""
    n = len(x)
    first = int(torch.randint(n, (1,), generator=gen))
    centres = [x[first]]
    d2 = sq_dists(x, x[first : first + 1]).squeeze(1)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # fewer distinct points than k: repeat random points
            j = int(torch.randint(n, (1,), generator=gen))
        else:
            j = int(torch.multinomial(d2 / total, 1, generator=gen))
        centres.append(x[j])
        d2 = torch.minimum(d2, sq_dists(x, x[j : j + 1]).squeeze(1))
    return torch.stack(centres)


def balanced_assign(x: torch.Tensor, c: torch.Tensor, capacity: int) -> torch.Tensor:
    """Assignment where no cluster gets more than ``capacity`` points.

    Rounds of proposals: every unassigned point proposes to its nearest non-full cluster; each cluster keeps
    its closest proposers up to its free capacity. Terminates because each round fills at least one cluster
    or assigns every proposer. Requires ``capacity * K >= N``.
    """
    n, k = len(x), len(c)
    assert capacity * k >= n, "capacity too small"
    d = sq_dists(x, c)  # (N, K)
    out = torch.full((n,), -1, dtype=torch.long)
    free = torch.full((k,), capacity, dtype=torch.long)
    while True:
        todo = (out < 0).nonzero().squeeze(1)
        if len(todo) == 0:
            return out
        dd = d[todo].masked_fill(free.unsqueeze(0) <= 0, float("inf"))
        best_d, best = dd.min(1)
        # Sort proposals by (cluster, distance): stable sort by distance, then by cluster.
        o = torch.argsort(best_d, stable=True)
        o = o[torch.argsort(best[o], stable=True)]
        cl = best[o]
        first = torch.searchsorted(cl, cl, right=False)  # index of the first proposal to the same cluster
        rank = torch.arange(len(o)) - first
        ok = rank < free[cl]
        out[todo[o[ok]]] = cl[ok]
        free -= torch.bincount(cl[ok], minlength=k)


def kmeans(
    x: torch.Tensor, k: int, iters: int = 50, seed: int = 0, balanced: bool = False, tol: float = 1e-6
) -> torch.Tensor:
    """Fit k centroids to x.

    Args:
        x: (N, E) float.
        k: number of centroids K.
        balanced: cap every cluster at ceil(N / K) points in each assignment step.
    Returns:
        (K, E) centroids. Empty clusters are re-seeded with the points farthest from their centroid, so every
        centroid is used when N >= K.
    """
    x = x.float()
    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    if n == 0:
        raise ValueError("kmeans needs at least one point")
    c = kmeans_plusplus(x, k, gen)
    capacity = -(-n // k)
    prev = None
    for _ in range(iters):
        a = balanced_assign(x, c, capacity) if balanced else assign(x, c)
        counts = torch.bincount(a, minlength=k)
        sums = torch.zeros_like(c).index_add_(0, a, x)
        nonempty = counts > 0
        c[nonempty] = sums[nonempty] / counts[nonempty].unsqueeze(1).float()
        empty = (~nonempty).nonzero().squeeze(1)
        if len(empty) and n >= k:
            err = (x - c[a]).pow(2).sum(1)
            far = torch.argsort(err, descending=True)[: len(empty)]
            c[empty] = x[far]
        shift = None if prev is None else (c - prev).pow(2).sum()
        if shift is not None and shift <= tol and len(empty) == 0:
            break
        prev = c.clone()
    return c
