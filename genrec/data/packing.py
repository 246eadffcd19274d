"""Sequence packing: place variable-length sequences into rows of a fixed capacity, so little of a batch is padding.

Used by the decoder-only model (``model.decoder.pack``): the packed rows carry ``doc_ids`` so that attention stays
within each sequence (a block-diagonal causal mask).
"""
from __future__ import annotations


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Rows of sequence indices: longest first, each into the first row with room (a new row when none has).

    Raises:
        ValueError: a sequence longer than ``capacity``.
    """
    too_long = [i for i, n in enumerate(lengths) if n > capacity]
    if too_long:
        raise ValueError(f"sequence {too_long[0]} has {lengths[too_long[0]]} tokens, more than the row capacity "
                         f"{capacity}")
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        j = next((j for j, f in enumerate(free) if f >= lengths[i]), None)
        if j is None:
            rows.append([])
            free.append(capacity)
            j = len(rows) - 1
        rows[j].append(i)
        free[j] -= lengths[i]
    return rows


__all__ = ["first_fit_decreasing"]
