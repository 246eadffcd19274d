"""Item content embeddings: ``SOURCES[cfg.embedding.source](cfg.embedding, items, dataset) -> (N, E)``.

- ``text``: item text through a Hugging Face encoder (``text_encoder.py``), cached on disk.
- ``file``: a user-supplied matrix (.npy or .pt), e.g. image or collaborative embeddings, row i = item i+1.
- ``collab``: collaborative embeddings from the training interactions (``collab.py``: SVD of PPMI co-occurrence).
- ``fusion``: several of the above ("text", "collab" or file paths), each L2-normalised per row and concatenated,
  so no source dominates by scale (multimodal content, or content + behaviour, for the tokenizer).
"""
from __future__ import annotations

import hashlib
import os
from typing import Callable

import numpy as np
import torch

from ..config import lookup
from .text_encoder import encode_texts, item_text, resolve_encoder, text_embeddings


def load_matrix(path: str, num_items: int) -> torch.Tensor:
    """A (N, E) matrix from ``.npy`` / ``.pt`` (a tensor, or a dict with key ``embeddings``).

    Raises:
        FileNotFoundError, ValueError: missing file, wrong suffix, or a row count that is not ``num_items``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"embedding.file={path!r} does not exist")
    if path.endswith(".npy"):
        emb = torch.from_numpy(np.load(path))
    elif path.endswith(".pt"):
        obj = torch.load(path, weights_only=True)
        emb = obj["embeddings"] if isinstance(obj, dict) else obj
    else:
        raise ValueError(f"embedding.file={path!r}: expected a .npy or .pt file")
    if emb.ndim != 2 or emb.shape[0] != num_items:
        raise ValueError(
            f"embedding.file={path!r} has shape {tuple(emb.shape)}; expected ({num_items}, E) with row i = item i+1"
        )
    return emb.float()


def file_embeddings(cfg, items: list[dict], dataset: str, data=None) -> torch.Tensor:
    return load_matrix(cfg.file, len(items))


def collab_embeddings(cfg, items: list[dict], dataset: str, data=None) -> torch.Tensor:
    """``collab.ppmi_svd_embeddings`` of the training part of each sequence (the last two items are held out)."""
    from .collab import ppmi_svd_embeddings

    if data is None:
        raise ValueError("embedding source 'collab' needs the interactions (pass data=InteractionData)")
    train = [s[:-2] for s in data.sequences]  # leave-one-out: validation and test items are never read
    return ppmi_svd_embeddings(train, len(items), cfg.collab_dim, cfg.collab_window)


def fusion_embeddings(cfg, items: list[dict], dataset: str, data=None) -> torch.Tensor:
    if not cfg.fusion:
        raise ValueError("embedding.source='fusion' needs embedding.fusion, e.g. ['text', 'collab', 'image_emb.npy']")
    named = {"text": text_embeddings, "collab": collab_embeddings}
    parts = [named[src](cfg, items, dataset, data=data) if src in named else load_matrix(src, len(items))
             for src in cfg.fusion]
    return torch.cat([torch.nn.functional.normalize(p, dim=-1) for p in parts], dim=-1)


SourceFn = Callable[..., torch.Tensor]
SOURCES: dict[str, SourceFn] = {"text": text_embeddings, "file": file_embeddings, "collab": collab_embeddings,
                                "fusion": fusion_embeddings}


def item_embeddings(cfg, items: list[dict], dataset: str, data=None) -> torch.Tensor:
    """(N, E) float32 embeddings for ``items`` (row i = item i+1), from ``cfg.source``.

    ``data`` (the ``InteractionData``) is read by the ``collab`` source only.
    """
    return lookup(SOURCES, cfg.source, field="embedding.source")(cfg, items, dataset, data=data)


def embedding_sha256(emb: torch.Tensor) -> str:
    """Hash of the exact matrix (shape + float32 bytes); the SID artifact records it."""
    arr = emb.detach().float().contiguous().cpu().numpy()
    h = hashlib.sha256(str(tuple(arr.shape)).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


__all__ = [
    "SOURCES",
    "item_embeddings",
    "embedding_sha256",
    "item_text",
    "encode_texts",
    "resolve_encoder",
    "text_embeddings",
    "load_matrix",
]
