"""Collaborative item embeddings from the training interactions: truncated SVD of a PPMI co-occurrence matrix.

Text alone says what an item IS; which items are bought together is in the interactions. Semantic IDs that carry
both (LETTER, Wang et al., CIKM 2024; LC-Rec's collaborative alignment) let a generative model ground its codes in
behaviour. This is the classic count-based recipe (Levy & Goldberg, NeurIPS 2014: SVD of shifted PPMI is the
matrix that item2vec / word2vec factorises implicitly): items co-occurring within ``window`` positions of a user's
TRAINING sequence (validation and test items are never read), weighted 1 / distance, positive PMI, truncated SVD,
``U * sqrt(S)`` per item, each row L2-normalised. Items never seen in training get zero rows (their IDs then come
from the other sources of a fusion).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def cooccurrence(train_sequences: Sequence[np.ndarray], num_items: int, window: int):
    """Symmetric (N, N) scipy CSR matrix: sum over pairs within ``window`` positions of 1 / distance."""
    from scipy import sparse

    rows, cols, vals = [], [], []
    for seq in train_sequences:
        seq = np.asarray(seq, dtype=np.int64) - 1
        for d in range(1, window + 1):
            if len(seq) <= d:
                break
            a, b = seq[:-d], seq[d:]
            keep = a != b
            rows += [a[keep], b[keep]]
            cols += [b[keep], a[keep]]
            vals.append(np.full(2 * int(keep.sum()), 1.0 / d))
    if not vals:
        return sparse.csr_matrix((num_items, num_items))
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    return sparse.coo_matrix((v, (r, c)), shape=(num_items, num_items)).tocsr()


def ppmi_svd_embeddings(train_sequences: Sequence[np.ndarray], num_items: int, dim: int = 128, window: int = 3,
                        seed: int = 0) -> torch.Tensor:
    """(N, dim) collaborative embeddings (row i = item i + 1); see the module docstring.

    Raises:
        ValueError: ``dim`` < 1 or not below the number of items, or ``window`` < 1.
    """
    from scipy.sparse.linalg import svds

    if window < 1:
        raise ValueError(f"embedding.collab_window={window} must be >= 1")
    if not 1 <= dim < num_items:
        raise ValueError(f"embedding.collab_dim={dim} must be in [1, {num_items}) (the number of items)")
    m = cooccurrence(train_sequences, num_items, window).tocoo()
    total = m.sum()
    row = np.asarray(m.sum(1)).ravel()
    pmi = np.log(m.data * total / (row[m.row] * row[m.col]))
    keep = pmi > 0
    from scipy import sparse

    ppmi = sparse.csr_matrix((pmi[keep], (m.row[keep], m.col[keep])), shape=m.shape)
    rng = np.random.default_rng(seed)
    v0 = rng.standard_normal(num_items)
    u, s, _ = svds(ppmi.astype(np.float64), k=dim, v0=v0)
    order = np.argsort(-s)  # svds returns ascending singular values
    emb = torch.from_numpy((u[:, order] * np.sqrt(s[order])).astype(np.float32))
    sign = torch.sign(emb.sum(0, keepdim=True))  # SVD signs are arbitrary: fix them for reproducibility
    return torch.nn.functional.normalize(emb * torch.where(sign == 0, 1.0, sign), dim=-1)


__all__ = ["cooccurrence", "ppmi_svd_embeddings"]
