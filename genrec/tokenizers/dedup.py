"""The collision digit: an extra last level that makes every item's semantic ID unique (TIGER Sec. 3.1).

Items that share the same L-code prefix get 0, 1, 2, ... in item-id order; the last level's codebook size is
the largest collision group (at least 1), so the artifact records it and no downstream code has to "add 1".
"""
from __future__ import annotations

import torch


def collision_digits(codes: torch.Tensor) -> torch.Tensor:
    """Rank of each row among the rows with the same code tuple, in row order.

    Args:
        codes: (N, L) long.
    Returns:
        (N,) long; rows with a unique tuple get 0.
    """
    if len(codes) == 0:
        return torch.zeros(0, dtype=torch.long)
    _, inverse = torch.unique(codes, dim=0, return_inverse=True)  # group id per row
    order = torch.argsort(inverse, stable=True)  # rows grouped, item-id order inside a group
    g = inverse[order]
    first = torch.searchsorted(g, g)  # position of the group's first row in the sorted order
    digits = torch.empty_like(inverse)
    digits[order] = torch.arange(len(g)) - first
    return digits


def add_collision_digit(codes: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Append the collision digit. Returns (codes (N, L+1), last level's codebook size = max group size)."""
    digits = collision_digits(codes)
    size = int(digits.max()) + 1 if len(digits) else 1
    return torch.cat([codes, digits.unsqueeze(1)], 1), size


def next_collision_digits(existing: torch.Tensor, new_prefixes: torch.Tensor) -> torch.Tensor:
    """Collision digits for new items given the deduplicated codes of the catalogue.

    Args:
        existing: (N, L+1) codes already assigned (last column = collision digit).
        new_prefixes: (M, L) codes of new items, in the order they are added.
    Returns:
        (M,) long: for each new item, the number of items (existing or earlier new ones) with its prefix,
        i.e. the next free digit. It can equal the artifact's last codebook size, which then has to grow.
    """
    both = torch.cat([existing[:, :-1], new_prefixes])
    return collision_digits(both)[len(existing):]
