"""The trie of valid semantic IDs, stored as tensors so that constrained decoding runs on the device.

Generative retrieval (TIGER, Rajput et al. 2023, "Recommender Systems with Generative Retrieval"; GENRE,
De Cao et al. 2021, "Autoregressive Entity Retrieval") decodes an item as L codes, one per level, and must only
emit code paths that name a real item. A Python dict trie queried per beam (the usual ``prefix_allowed_tokens_fn``)
costs a Python call per (batch, beam, step); scanning every item's code for every prefix (GRID's
``_check_valid_prefix``) costs O(N) per beam. Here each level ``l`` is one table:

    next_node[l]: (num_nodes_l, K_l) int32, -1 where code k does not extend node n.

Node ids at level ``l`` number the distinct prefixes of length ``l`` (level 0 has the single root, node 0); at the
last level the table holds the item id (row + 1) instead of a node id. Walking a batch of R prefixes is one gather
per level, and the allowed set of R prefixes is ``next_node[l][node] >= 0``: (R, K_l), no Python loop over rows.

The dense table costs num_nodes_l * K_l entries. With TIGER-sized codes (3 x 256 + a collision digit) the largest
level holds about N * 256 entries (12k items: 3M int32, 12 MB). A level whose table would exceed
``max_dense_entries`` is stored sorted-CSR instead: the sorted keys ``node * K_l + code`` of its edges and their
children; a lookup is then ``searchsorted`` over the R * K_l candidate keys, still one batched op per level.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

# 2**26 int32 entries = 256 MB; a dense level beyond this (e.g. codes over an LLM's whole vocabulary) goes CSR.
DEFAULT_MAX_DENSE_ENTRIES = 1 << 26


class SidTrie:
    """Tensor trie over an (N, L) table of semantic-ID codes; item ``i + 1`` is row ``i``.

    Build with :meth:`from_codes`; move with :meth:`to`. All queries take and return tensors on the trie's device.

    Attributes:
        num_items: N.
        num_levels: L.
        codebook_sizes: K_l per level.
        num_nodes: nodes per level (level 0: 1 root; level l: distinct prefixes of length l).
    """

    def __init__(
        self,
        tables: list[torch.Tensor | tuple[torch.Tensor, torch.Tensor]],
        codebook_sizes: Sequence[int],
        num_items: int,
        num_nodes: Sequence[int] | None = None,
    ):
        assert len(tables) == len(codebook_sizes)
        self.tables = tables  # per level: dense (num_nodes_l, K_l) int32, or CSR (keys (E,), children (E,))
        self.codebook_sizes = [int(k) for k in codebook_sizes]
        self.num_items = int(num_items)
        self.num_levels = len(codebook_sizes)
        self.num_nodes = (list(num_nodes) if num_nodes is not None  # counted once: a count reads the tables back
                          else [self._level_nodes(l) for l in range(self.num_levels)])

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_codes(
        cls,
        codes: torch.Tensor,
        codebook_sizes: Sequence[int],
        max_dense_entries: int = DEFAULT_MAX_DENSE_ENTRIES,
    ) -> "SidTrie":
        """Build the trie from the item code table.

        Args:
            codes: (N, L) integer codes; row i is item i + 1. Code l must lie in [0, codebook_sizes[l]).
            codebook_sizes: K_l for each of the L levels.
            max_dense_entries: levels whose dense table would hold more entries are stored sorted-CSR.

        Returns:
            A ``SidTrie`` on ``codes.device``.

        Raises:
            ValueError: if shapes disagree, a code is out of range, or two items share the same full code
                (the collision digit should make every code unique; rebuild the SIDs with dedup).
        """
        if codes.dim() != 2:
            raise ValueError(f"codes must be (N, L), got shape {tuple(codes.shape)}")
        n, num_levels = codes.shape
        if len(codebook_sizes) != num_levels:
            raise ValueError(
                f"codebook_sizes has {len(codebook_sizes)} levels but codes has L={num_levels} columns; "
                "pass one size per level, including the collision digit"
            )
        if n == 0:
            raise ValueError("codes is empty: the trie needs at least one item")
        codes = codes.long()
        sizes = torch.as_tensor(list(codebook_sizes), device=codes.device)
        if bool((codes < 0).any()) or bool((codes >= sizes).any()):
            bad = int(((codes < 0) | (codes >= sizes)).any(dim=1).nonzero()[0])
            raise ValueError(
                f"codes row {bad} (item {bad + 1}) = {codes[bad].tolist()} is outside codebook_sizes "
                f"{list(codebook_sizes)}"
            )
        tables: list = []
        node = torch.zeros(n, dtype=torch.long, device=codes.device)  # node of each item's prefix, level 0 = root
        num_nodes = 1
        for level, k in enumerate(codebook_sizes):
            key = node * k + codes[:, level]  # (N,) edge id: (parent node, code)
            if level < num_levels - 1:
                uniq, child = torch.unique(key, return_inverse=True)  # child: new node id of each item's prefix
                edge_child = torch.arange(len(uniq), device=codes.device)
            else:
                uniq, counts = torch.unique(key, return_counts=True)
                if bool((counts > 1).any()):
                    dup_key = uniq[counts > 1][0]
                    rows = (key == dup_key).nonzero().flatten()[:5].tolist()
                    raise ValueError(
                        f"items {[r + 1 for r in rows]} share the code {codes[rows[0]].tolist()}: a trie path must "
                        "name one item; rebuild the semantic IDs with the collision digit (dedup)"
                    )
                order = torch.argsort(key)
                edge_child = order + 1  # item id at the leaf
                child = None
            if num_nodes * k <= max_dense_entries:
                table = torch.full((num_nodes * k,), -1, dtype=torch.int32, device=codes.device)
                table[uniq] = edge_child.to(torch.int32)
                tables.append(table.view(num_nodes, k))
            else:
                tables.append((uniq, edge_child.long()))
            if child is not None:
                node, num_nodes = child, len(uniq)
        return cls(tables, codebook_sizes, n)

    def to(self, device: torch.device | str) -> "SidTrie":
        """Return a copy of the trie on ``device``."""
        tables = [
            t.to(device) if isinstance(t, torch.Tensor) else (t[0].to(device), t[1].to(device)) for t in self.tables
        ]
        return SidTrie(tables, self.codebook_sizes, self.num_items, self.num_nodes)

    @property
    def device(self) -> torch.device:
        t = self.tables[0]
        return (t if isinstance(t, torch.Tensor) else t[0]).device

    def is_dense(self, level: int) -> bool:
        return isinstance(self.tables[level], torch.Tensor)

    def _level_nodes(self, level: int) -> int:
        if level == 0:
            return 1
        prev = self.tables[level - 1]
        if isinstance(prev, torch.Tensor):
            return int(prev.max()) + 1
        return int(prev[1].max()) + 1

    # ------------------------------------------------------------------ queries
    def children(self, level: int, node: torch.Tensor) -> torch.Tensor:
        """Children of a batch of level-``level`` nodes.

        Args:
            level: 0 <= level < L.
            node: (R,) long node ids at this level (0 is the root at level 0). Must be valid (>= 0).

        Returns:
            (R, K_level) long: the child node id at level + 1 for each code, the item id (1..N) at the last
            level, and -1 where the code does not extend the prefix.
        """
        table = self.tables[level]
        if isinstance(table, torch.Tensor):
            return table.index_select(0, node).long()
        keys, child = table
        k = self.codebook_sizes[level]
        want = node[:, None] * k + torch.arange(k, device=node.device)  # (R, K)
        pos = torch.searchsorted(keys, want).clamp_(max=len(keys) - 1)
        return torch.where(keys[pos] == want, child[pos], torch.full_like(want, -1))

    def walk(self, prefix: torch.Tensor) -> torch.Tensor:
        """Node reached by each prefix, O(depth) gathers.

        Args:
            prefix: (R, l) codes with l <= L.

        Returns:
            (R,) long: the node id at level l (the item id if l == L), or -1 where the prefix is not in the trie.
        """
        node = torch.zeros(prefix.shape[0], dtype=torch.long, device=prefix.device)
        for level in range(prefix.shape[1]):
            code = prefix[:, level].long()
            in_range = (code >= 0) & (code < self.codebook_sizes[level]) & (node >= 0)
            child = self.children(level, node.clamp(min=0))  # (R, K)
            nxt = child.gather(1, code.clamp(0, self.codebook_sizes[level] - 1)[:, None]).squeeze(1)
            node = torch.where(in_range, nxt, torch.full_like(nxt, -1))
        return node

    def allowed(self, prefix: torch.Tensor) -> torch.Tensor:
        """Which codes may follow each prefix.

        Args:
            prefix: (R, l) codes, l < L.

        Returns:
            (R, K_l) bool; all False for a prefix that is not in the trie.
        """
        level = prefix.shape[1]
        if level >= self.num_levels:
            raise ValueError(f"prefix has {level} codes; the trie has only L={self.num_levels} levels")
        node = self.walk(prefix)
        return (self.children(level, node.clamp(min=0)) >= 0) & (node >= 0)[:, None]

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Item id of each full code (R, L) -> (R,) long, 0 where the code names no item."""
        if codes.shape[1] != self.num_levels:
            raise ValueError(f"lookup needs full codes of L={self.num_levels} levels, got {codes.shape[1]}")
        return self.walk(codes).clamp(min=0)

    def __repr__(self) -> str:
        kinds = ["dense" if self.is_dense(l) else "csr" for l in range(self.num_levels)]
        return (
            f"SidTrie(num_items={self.num_items}, codebook_sizes={self.codebook_sizes}, "
            f"num_nodes={self.num_nodes}, storage={kinds})"
        )
