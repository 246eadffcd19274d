"""Optimised product quantisation (Ge et al., CVPR 2013) by faiss: long, flat semantic IDs (RPG uses OPQ 32 x 256).

OPQ learns a rotation of the embedding space before product quantisation, so that the L sub-spaces carry balanced
information; with ``rotation=false`` it is plain PQ (as ``pq``, but by faiss). Optionally the embeddings are first
reduced by PCA, whitened (RPG: ``sent_emb_pca`` with ``whiten=True``). The rotation is trained against a PQ of
``codebook_size`` codes per level, the PQ it serves (faiss's OPQ alone alternates with a fixed 256-code PQ).

faiss is used rather than a torch implementation because its OPQ alternates rotation and codebook updates
(Procrustes + k-means) in tuned C++; it is an optional dependency (``pip install 'genrec[faiss]'``) needed only by
this tokenizer. ``encode`` works on items unseen by ``fit``.

Reproducibility: a fit is deterministic for a given number of OpenMP threads, but faiss's k-means reductions are
split by thread, so another thread count gives other codes (on synthetic data nearly all codes differ between 1
and 2 threads). The fitted artifact is cached and every run record carries the hash of the codes it used
(``semantic_ids`` under ``inputs``); rebuild on the same thread count to get the same IDs.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import Tokenizer


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError("tokenizer.kind='opq' needs faiss: pip install 'genrec[faiss]' (faiss-cpu), "
                          "or use tokenizer.kind=pq") from None
    return faiss


class OPQTokenizer(Tokenizer):
    kind = "opq"

    def __init__(self, num_levels: int = 32, codebook_size: int = 256, seed: int = 0, rotation: bool = True,
                 pca_dim: int = 0, whiten: bool = True):
        super().__init__(num_levels, codebook_size, seed)
        bits = int(codebook_size).bit_length() - 1
        if codebook_size != 1 << bits or bits > 16:
            raise ValueError(f"tokenizer.codebook_size={codebook_size}: opq needs a power of two <= 65536 "
                             f"(codes are {bits} bits)")
        if pca_dim < 0 or (pca_dim and pca_dim % num_levels):
            raise ValueError(f"tokenizer.opq.pca_dim={pca_dim} must be 0 or a multiple of "
                             f"tokenizer.num_levels={num_levels}")
        self.bits, self.rotation, self.pca_dim, self.whiten = bits, rotation, pca_dim, whiten
        self.decodes_to_input = not (pca_dim and whiten)  # faiss cannot invert a whitening PCA
        self.config.update(rotation=rotation, pca_dim=pca_dim, whiten=whiten)
        self.index = None

    def _factory(self, dim: int) -> str:
        pre = []
        if self.pca_dim:
            pre.append(f"PCA{'W' if self.whiten else ''}{self.pca_dim}")
        if self.rotation:
            pre.append(f"OPQ{self.num_levels}")
        return ",".join([*pre, f"PQ{self.num_levels}x{self.bits}"])

    def fit(self, emb: torch.Tensor) -> "OPQTokenizer":
        faiss = _faiss()
        x = self._check_emb(emb).numpy().astype(np.float32)
        dim = x.shape[1]
        if (self.pca_dim or dim) % self.num_levels:
            raise ValueError(f"opq: the embedding dimension {dim} is not a multiple of tokenizer.num_levels="
                             f"{self.num_levels}; set tokenizer.opq.pca_dim to a multiple of it")
        if x.shape[0] < self.codebook_size:
            raise ValueError(f"opq: {x.shape[0]} items are too few to fit: PQ needs at least "
                             f"tokenizer.codebook_size={self.codebook_size}")
        index = faiss.index_factory(dim, self._factory(dim))
        opq, inner_pq = _configure(faiss, index, self.seed, self.bits)
        index.train(np.ascontiguousarray(x))
        if opq is not None:
            opq.pq = None  # faiss holds a bare pointer to inner_pq, freed with it when fit returns
        self.index, self.fitted = index, True
        return self

    def encode(self, emb: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        x = np.ascontiguousarray(self._check_emb(emb).numpy().astype(np.float32))
        packed = self.index.sa_encode(x)  # (N, code bytes), L codes of `bits` bits each, little-endian bit order
        return torch.from_numpy(_unpack(packed, self.num_levels, self.bits))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Reconstruction of the embeddings; with a whitening PCA (not invertible by faiss) in the whitened space."""
        self._check_fitted()
        faiss = _faiss()
        packed = _pack(codes.long().cpu().numpy(), self.bits, self.index.sa_code_size())
        if not (self.pca_dim and self.whiten):
            return torch.from_numpy(self.index.sa_decode(packed))
        root = faiss.downcast_index(self.index)
        x = faiss.downcast_index(root.index).sa_decode(packed)
        for i in reversed(range(1, root.chain.size())):  # undo OPQ's rotation, keep the PCA space
            x = root.chain.at(i).reverse_transform(x)
        return torch.from_numpy(x)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"index": torch.from_numpy(_faiss().serialize_index(self.index).copy())}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.index = _faiss().deserialize_index(state["index"].numpy())


def _configure(faiss, index, seed: int, bits: int):
    """Seed the final PQ's k-means (faiss's default seed is a constant) and let it run quietly on small catalogs
    (faiss warns below 39 points per centroid).

    OPQ's rotation is trained by alternating with a PQ that faiss makes with 8-bit codes unless ``OPQMatrix.pq``
    is set; it is set here to one with ``bits``-bit codes, so the rotation is fitted to the quantiser that will
    use it. Its k-means keeps faiss's fixed seed, so 8-bit rotations are those faiss trains by itself. Returns the
    OPQ transform and that PQ (or None, None): faiss holds a bare pointer to the PQ, so the caller keeps it alive
    until training is done and then unsets it.
    """
    root = faiss.downcast_index(index)
    pq_index = faiss.downcast_index(root.index) if isinstance(root, faiss.IndexPreTransform) else root
    pq_index.pq.cp.seed = int(seed)
    pq_index.pq.cp.min_points_per_centroid = 1
    if not isinstance(root, faiss.IndexPreTransform):
        return None, None
    for i in range(root.chain.size()):
        opq = faiss.downcast_VectorTransform(root.chain.at(i))
        if isinstance(opq, faiss.OPQMatrix):
            inner = faiss.ProductQuantizer(opq.d_out, opq.M, bits)
            inner.cp.min_points_per_centroid = 1
            opq.pq = inner
            return opq, inner
    return None, None


def _unpack(packed: np.ndarray, levels: int, bits: int) -> np.ndarray:
    """faiss's packed PQ codes (N, bytes) -> (N, L) int64; bits are read little-endian, code 0 first."""
    if bits == 8:
        return packed[:, :levels].astype(np.int64)
    b = np.unpackbits(packed, axis=1, bitorder="little")[:, : levels * bits].reshape(len(packed), levels, bits)
    return (b.astype(np.int64) << np.arange(bits)).sum(-1)


def _pack(codes: np.ndarray, bits: int, nbytes: int) -> np.ndarray:
    if bits == 8:
        return np.ascontiguousarray(codes.astype(np.uint8))
    b = ((codes[..., None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(len(codes), -1)
    out = np.packbits(b, axis=1, bitorder="little")
    return np.ascontiguousarray(np.pad(out, ((0, 0), (0, nbytes - out.shape[1]))))
