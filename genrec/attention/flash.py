"""FlashAttention-2 (Dao, 2023) through the ``flash-attn`` package: CUDA only, fp16/bf16, optional dependency.

Padding and packed documents use the variable-length entry point (``flash_attn_varlen_func``): the tokens that
are not padding are gathered into one packed sequence with ``cu_seqlens`` boundaries, so no compute is spent on
padding and no mask is materialised. flash-attn's causal mask is bottom-right aligned, as ours is (``masks.py``).
"""
from __future__ import annotations

import torch

INSTALL_HINT = "model.attention='flash' needs flash-attn: pip install 'genrec[flash]' (CUDA only) or use sdpa"


def _import_flash():
    try:
        from flash_attn import flash_attn_func, flash_attn_varlen_func
    except ImportError as e:  # the package is missing or was built for another torch / CUDA
        raise ImportError(f"{INSTALL_HINT} ({e})") from e
    return flash_attn_func, flash_attn_varlen_func


def _check_inputs(q: torch.Tensor) -> None:
    """flash-attn's contract: CUDA tensors in fp16 or bf16."""
    if not q.is_cuda:
        raise ValueError(f"model.attention='flash' runs on CUDA only, got tensors on {q.device}; use sdpa on CPU")
    _check_dtype(q)


def _check_dtype(q: torch.Tensor) -> None:
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"model.attention='flash' takes fp16 / bf16 only, got {q.dtype}: run under autocast "
                         f"(train.precision=bf16)")


def _segments(keep: torch.Tensor, doc_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Flat indices of kept tokens (row-major), int32 cu_seqlens over (row, document) runs, and the longest run."""
    b, t = keep.shape
    flat = keep.reshape(-1).nonzero(as_tuple=True)[0]
    seg = torch.arange(b, device=keep.device)[:, None].expand(b, t).reshape(-1)[flat]
    if doc_ids is not None:
        seg = seg * (int(doc_ids.max()) + 2) + doc_ids.reshape(-1)[flat] + 1  # ids may start at -1
    starts = torch.ones_like(seg, dtype=torch.bool)
    starts[1:] = seg[1:] != seg[:-1]
    bounds = torch.cat([starts.nonzero(as_tuple=True)[0], torch.tensor([seg.numel()], device=keep.device)])
    lengths = bounds[1:] - bounds[:-1]
    return flat, bounds.to(torch.int32), int(lengths.max()) if lengths.numel() else 0


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    window: int = 0,
    doc_ids: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Softmax attention with flash-attn. Same mathematics as ``eager_attention``; padded query rows return zeros.

    Cached decoding (Tq < Tk) of padded rows packs each row's queries and its real keys into separate varlen
    sequences: the queries are the last Tq positions, so flash-attn's bottom-right causal mask lets them see every
    real cached key, as ours does.

    Raises:
        ImportError: flash-attn is not installed (with the install hint).
        ValueError: tensors not on CUDA or not fp16 / bf16 (run under autocast: training and evaluation both do),
            or doc_ids with Tq != Tk (cached decoding of packed documents; use sdpa for that).
    """
    flash_attn_func, flash_attn_varlen_func = _import_flash()
    _check_inputs(q)
    b, h, tq, dh = q.shape
    tk = k.shape[-2]
    win = (window - 1, 0 if causal else window - 1) if window > 0 else (-1, -1)
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # (B, T, H, Dh): flash-attn's layout
    if doc_ids is None and key_padding_mask is None:
        out = flash_attn_func(qt, kt, vt, softmax_scale=scale, causal=causal, window_size=win)
        return out.transpose(1, 2)
    if tq != tk:
        if doc_ids is not None:
            raise ValueError(f"flash with doc_ids needs Tq == Tk, got Tq={tq}, Tk={tk}; use sdpa")
        keep_k = ~key_padding_mask.bool()
        keep_q = keep_k[:, tk - tq:]
        cu_q = torch.nn.functional.pad(keep_q.sum(1).cumsum(0), (1, 0)).to(torch.int32)  # one sequence per row
        cu_k = torch.nn.functional.pad(keep_k.sum(1).cumsum(0), (1, 0)).to(torch.int32)
        flat_q = keep_q.reshape(-1).nonzero(as_tuple=True)[0]
        flat_k = keep_k.reshape(-1).nonzero(as_tuple=True)[0]
        packed = flash_attn_varlen_func(
            qt.reshape(b * tq, h, dh)[flat_q], kt.reshape(b * tk, h, dh)[flat_k], vt.reshape(b * tk, h, dh)[flat_k],
            cu_q, cu_k, int(keep_q.sum(1).max()), int(keep_k.sum(1).max()), softmax_scale=scale, causal=causal,
            window_size=win)
        out = q.new_zeros(b * tq, h, dh)
        out[flat_q] = packed
        return out.view(b, tq, h, dh).transpose(1, 2)
    keep = torch.ones(b, tk, dtype=torch.bool, device=q.device)
    if key_padding_mask is not None:
        keep = ~key_padding_mask.bool()
    flat, cu, longest = _segments(keep, doc_ids)
    pick = lambda x: x.reshape(b * tk, h, dh)[flat]  # noqa: E731  (N_kept, H, Dh)
    packed = flash_attn_varlen_func(
        pick(qt), pick(kt), pick(vt), cu, cu, longest, longest, softmax_scale=scale, causal=causal, window_size=win
    )
    out = q.new_zeros(b * tk, h, dh)
    out[flat] = packed
    return out.view(b, tk, h, dh).transpose(1, 2)
