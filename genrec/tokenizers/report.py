"""Build report for semantic IDs: code usage and perplexity per level, collisions before the collision
digit, and a PNG of per-level code counts.

- usage_l = |{codes used at level l}| / K_l (TIGER aims at >= 80% per level for a healthy RQ-VAE).
- perplexity_l = exp(-sum_k p_k log p_k), p_k the share of items with code k at level l (K_l when uniform).
- collision share = items whose full L-code tuple is shared with another item / N; largest group = the size of
  the biggest such set (= the collision digit's codebook size).
- reconstruction = sum_i ||x_i - decode(codes_i)||^2 / sum_i ||x_i - mean(x)||^2: the share of the embeddings'
  variance the codes lose (0 exact, 1 no better than the mean); None where the codes do not decode into the
  embedding space (random IDs; OPQ after a whitening PCA decodes into the PCA space).
"""
from __future__ import annotations

import math

import torch


def level_stats(codes: torch.Tensor, codebook_sizes: list[int]) -> list[dict]:
    out = []
    for level, k in enumerate(codebook_sizes):
        counts = torch.bincount(codes[:, level], minlength=k).double()
        p = counts[counts > 0] / counts.sum()
        out.append(
            {
                "level": level,
                "codebook_size": k,
                "used": int((counts > 0).sum()),
                "usage": float((counts > 0).sum()) / k,
                "perplexity": float(math.exp(float(-(p * p.log()).sum()))) if len(p) else 0.0,
                "max_count": int(counts.max()) if len(counts) else 0,
            }
        )
    return out


def reconstruction_error(tokenizer, emb: torch.Tensor, codes: torch.Tensor) -> float | None:
    """Relative squared reconstruction error of ``codes`` (N, L) against the embeddings ``emb`` (N, E)."""
    if not tokenizer.decodes_to_input:
        return None
    try:
        with torch.no_grad():
            rec = tokenizer.decode(codes)
    except NotImplementedError:
        return None
    x = emb.double().cpu()
    if rec.shape != x.shape:
        return None
    total = float(((x - x.mean(0)) ** 2).sum())
    return float(((x - rec.double()) ** 2).sum()) / total if total > 0 else 0.0


def collision_stats(codes: torch.Tensor) -> dict:
    """Collisions of the (N, L) tuples, before the collision digit."""
    n = len(codes)
    _, counts = torch.unique(codes, dim=0, return_counts=True)
    return {
        "num_items": n,
        "unique_ids": len(counts),
        "collided_items": int(counts[counts > 1].sum()),
        "collision_share": float(counts[counts > 1].sum()) / n if n else 0.0,
        "max_group": int(counts.max()) if n else 0,
    }


def sid_report(codes: torch.Tensor, codebook_sizes: list[int]) -> dict:
    """Report on tokenizer codes (N, L) before the collision digit."""
    return {"levels": level_stats(codes, codebook_sizes), "collisions": collision_stats(codes)}


def plot_usage(codes: torch.Tensor, codebook_sizes: list[int], path: str, title: str = "") -> None:
    """PNG: per level, the item count of every code, sorted high to low (a flat curve = even usage)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = len(codebook_sizes)
    fig, axes = plt.subplots(1, levels, figsize=(4 * levels, 3), squeeze=False)
    for level, (ax, k) in enumerate(zip(axes[0], codebook_sizes)):
        counts = torch.bincount(codes[:, level], minlength=k).sort(descending=True).values
        used = int((counts > 0).sum())
        ax.bar(range(k), counts.numpy(), width=1.0)
        ax.set_title(f"level {level}: {used}/{k} codes used")
        ax.set_xlabel("code (sorted by count)")
        ax.set_ylabel("items")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
