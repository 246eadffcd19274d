"""Residual quantisation, the loop shared by residual k-means and RQ-VAE.

Level l quantizes the residual left by levels < l: r_0 = x, c_l = Q_l(r_l), r_{l+1} = r_l - e_l(c_l), and
x ~ sum_l e_l(c_l) (Zeghidour et al., SoundStream 2021; Lee et al., RQ-VAE 2022; TIGER Sec. 3.1). The
per-level quantizer is pluggable: ``quantize_level(r, l) -> (codes (N,), vectors (N, D))``. Residual k-means
fits a k-means per level inside it; RQ-VAE looks up its learned codebooks (vectors keep their gradient, the
residual passed on does not, as in the usual RQ-VAE implementations).
"""
from __future__ import annotations

from typing import Callable

import torch

from .kmeans import assign, kmeans

QuantizeLevel = Callable[[torch.Tensor, int], "tuple[torch.Tensor, torch.Tensor]"]


def residual_loop(x: torch.Tensor, num_levels: int, quantize_level: QuantizeLevel):
    """Run the residual loop.

    Args:
        x: (N, D) vectors to quantize.
        quantize_level: (residual (N, D), level) -> (codes (N,) long, code vectors (N, D)).
    Returns:
        codes (N, L) long, vectors: list of L tensors (N, D) (their sum approximates x), residuals: list of
        the L inputs r_l seen by each level.
    """
    r = x
    codes, vectors, residuals = [], [], []
    for level in range(num_levels):
        residuals.append(r)
        idx, e = quantize_level(r, level)
        codes.append(idx)
        vectors.append(e)
        r = r - e.detach()
    return torch.stack(codes, 1), vectors, residuals


def fit_residual_kmeans(
    x: torch.Tensor, num_levels: int, k: int, iters: int, seed: int, balanced: bool = False
) -> list[torch.Tensor]:
    """One k-means per level on the residuals of the previous levels. Returns L codebooks (K, D)."""
    books: list[torch.Tensor] = []

    def fit_level(r: torch.Tensor, level: int):
        c = kmeans(r, k, iters=iters, seed=seed + level, balanced=balanced)
        books.append(c)
        idx = assign(r, c)
        return idx, c[idx]

    residual_loop(x, num_levels, fit_level)
    return books


def residual_encode(x: torch.Tensor, books: list[torch.Tensor]) -> torch.Tensor:
    """Greedy nearest-codeword residual encoding: (N, D) -> (N, L)."""

    def nearest(r: torch.Tensor, level: int):
        idx = assign(r, books[level])
        return idx, books[level][idx]

    return residual_loop(x, len(books), nearest)[0]


def residual_decode(codes: torch.Tensor, books: list[torch.Tensor]) -> torch.Tensor:
    """Sum of the chosen codewords: (N, L) -> (N, D)."""
    return sum(books[level][codes[:, level]] for level in range(len(books)))
