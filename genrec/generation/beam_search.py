"""Trie-constrained beam search over semantic IDs, batched on the device.

TIGER (Rajput et al. 2023) retrieves the top-K items by beam search over the L code levels, keeping only code
paths that name a real item. Every step here is a handful of batched tensor ops over the B * W rows: a trie
gather gives each beam's allowed codes, one ``topk`` over the W * K_l candidates of each user picks the new beams,
and ``parent`` tells the model how to reorder its KV cache. There is no Python loop over batch, beam or
candidate, only over the L levels.

The search reads nothing from any model's generation config: it is deterministic (no sampling, no temperature,
no length penalty, since every item has the same length L). Scores are summed per-level log-probabilities as the
step function returns them.

Row layout: rows are (batch, beam) flattened batch-major, row ``r = b * W + w``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .trie import SidTrie

# step_fn(level, prefix (B*W, level), parent (B*W,)) -> log-probs (B*W, K_level)
StepFn = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class BeamOutput:
    """Result of :func:`constrained_beam_search`, best first along dim 1.

    Attributes:
        items: (B, W') long item ids (row + 1 of the code table); 0 where fewer than W' valid items were found.
        scores: (B, W') float summed log-probs of the items' code paths; -inf where ``items`` is 0.
        codes: (B, W', L) long codes of the items; 0 where ``items`` is 0.
    """

    items: torch.Tensor
    scores: torch.Tensor
    codes: torch.Tensor


@torch.no_grad()
def constrained_beam_search(
    step_fn: StepFn,
    trie: SidTrie,
    batch_size: int,
    beam_size: int,
    device: torch.device | str | None = None,
    num_return: int | None = None,
) -> BeamOutput:
    """Beam search restricted to the trie's code paths; returns the top items of each user, distinct, best first.

    Each of the L steps calls ``step_fn(level, prefix, parent)`` once for all B * W rows:

    * ``prefix``: (B*W, level) long, the codes row r has chosen at levels 0..level-1.
    * ``parent``: (B*W,) long, for each current row r the index of the row, among the B*W rows of the previous
      ``step_fn`` call, that r extends: the caller keeps its per-row state (KV cache) in the previous call's row
      order and must ``index_select(0, parent)`` it before appending ``prefix[:, -1]``. ``parent[r]`` always lies
      in user r // W's block of rows, so state shared by a user's beams (encoder outputs, cross-attention keys)
      needs no reordering. At level 0 there is no previous call: ``parent = arange(B*W)`` and the caller's
      state starts as W copies of each user's state, batch-major (``repeat_interleave(W, dim=0)``).
    * returns: (B*W, K_level) float log-probs of this level's codes (not masked; the search applies the trie).

    At level 0 only beam 0 of each user is live (the other W - 1 rows start at -inf), so beams never duplicate.
    Codes outside the trie get -inf; a row with no live continuation stays at -inf and is returned as item 0.
    Because each trie path names one item, the returned items are distinct. With W >= N the search is exact:
    every valid path survives each step, so the output equals ranking all items by their summed log-probs.

    Args:
        step_fn: the model, see above.
        trie: the valid codes, on ``device``.
        batch_size: B users.
        beam_size: W beams per user.
        device: where the search runs; defaults to the trie's device.
        num_return: return the best ``num_return`` <= W items per user (default W).

    Returns:
        BeamOutput with items (B, num_return), scores (B, num_return), codes (B, num_return, L).

    Raises:
        ValueError: on non-positive sizes, ``num_return > beam_size``, or a step_fn output of the wrong shape.
    """
    if batch_size < 1 or beam_size < 1:
        raise ValueError(f"batch_size and beam_size must be >= 1, got batch_size={batch_size}, beam_size={beam_size}")
    num_return = beam_size if num_return is None else num_return
    if not 1 <= num_return <= beam_size:
        raise ValueError(f"num_return={num_return} must lie in [1, beam_size={beam_size}]")
    device = trie.device if device is None else torch.device(device)
    b, w = batch_size, beam_size
    rows = b * w
    neg_inf = float("-inf")

    scores = torch.zeros(b, w, device=device)
    scores[:, 1:] = neg_inf  # (B, W): only beam 0 is live before the first step
    node = torch.zeros(rows, dtype=torch.long, device=device)  # trie node of each row
    prefix = torch.zeros(rows, 0, dtype=torch.long, device=device)
    parent = torch.arange(rows, device=device)
    row_base = (torch.arange(b, device=device) * w)[:, None]  # (B, 1) first row of each user

    for level in range(trie.num_levels):
        k = trie.codebook_sizes[level]
        logp = step_fn(level, prefix, parent)
        if logp.shape != (rows, k):
            raise ValueError(
                f"step_fn(level={level}) returned shape {tuple(logp.shape)}, expected (B*W, K_{level}) = ({rows}, {k})"
            )
        child = trie.children(level, node)  # (R, K): next node / item id, -1 if invalid
        cand = scores.reshape(rows, 1) + logp.to(scores.dtype)  # (R, K)
        cand = cand.masked_fill(child < 0, neg_inf).view(b, w * k)
        top_scores, top_idx = cand.topk(w, dim=1)  # (B, W) best first
        beam = torch.div(top_idx, k, rounding_mode="floor")
        code = top_idx - beam * k
        parent = (row_base + beam).view(rows)
        node = child.view(b, w * k).gather(1, top_idx).view(rows)
        live = torch.isfinite(top_scores).view(rows)
        node = torch.where(live, node, torch.zeros_like(node))  # dead rows park at node 0; their score stays -inf
        prefix = torch.cat([prefix.index_select(0, parent), code.view(rows, 1)], dim=1)
        scores = top_scores

    live = torch.isfinite(scores)  # (B, W)
    items = torch.where(live, node.view(b, w), torch.zeros_like(node.view(b, w)))
    codes = prefix.view(b, w, -1).masked_fill(~live[..., None], 0)
    return BeamOutput(items[:, :num_return], scores[:, :num_return], codes[:, :num_return])


@torch.no_grad()
def exhaustive_scores(step_fn: StepFn, codes: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Reference scorer: each user's summed log-prob of every item's full code path, by teacher forcing.

    Runs ``step_fn`` with all N items as the rows of every user (B * N rows, ``parent = arange``, since row r
    always extends itself), and sums the log-prob of each item's own code at each level, in the same order as
    :func:`constrained_beam_search` adds them. Exponential in nothing, linear in N: meant for tests and tiny catalogs.

    Args:
        step_fn: as for :func:`constrained_beam_search`, called with ``B * N`` rows.
        codes: (N, L) code table.
        batch_size: B.

    Returns:
        (B, N) float scores; column i is item i + 1.
    """
    n, num_levels = codes.shape
    rows = batch_size * n
    full = codes.long().repeat(batch_size, 1)  # (B*N, L), row b * N + i = item i + 1
    parent = torch.arange(rows, device=codes.device)
    total = torch.zeros(rows, device=codes.device)
    for level in range(num_levels):
        logp = step_fn(level, full[:, :level], parent)
        total = total + logp.gather(1, full[:, level : level + 1]).squeeze(1).to(total.dtype)
    return total.view(batch_size, n)
