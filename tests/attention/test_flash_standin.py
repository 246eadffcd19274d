"""flash_attention's packing, masks and dtype contract on CPU: flash-attn's two entry points are replaced by a torch
reference of their documented semantics (bottom-right causal, varlen sequences), so everything around the CUDA
kernel runs here, including cached decoding of padded rows and a decoder evaluated under bf16 autocast."""
import itertools
import math

import pytest
import torch

from genrec.attention import flash as flash_mod
from genrec.attention.eager import eager_attention


def _attend(q, k, v, scale, causal, window):
    """One sequence, flash layout (T, H, Dh); bottom-right aligned causal mask and window."""
    tq, tk = q.shape[0], k.shape[0]
    s = torch.einsum("qhd,khd->hqk", q.float(), k.float()) * (scale or 1 / math.sqrt(q.shape[-1]))
    qpos = torch.arange(tk - tq, tk)[:, None]
    kpos = torch.arange(tk)[None]
    ok = torch.ones(tq, tk, dtype=torch.bool)
    if causal:
        ok &= kpos <= qpos
    if window[0] >= 0:
        ok &= qpos - kpos <= window[0]
    s = s.masked_fill(~ok, float("-inf"))
    return torch.einsum("hqk,khd->qhd", torch.softmax(s, -1).nan_to_num(), v.float()).to(q.dtype)


def fake_flash_attn_func(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1)):
    assert q.dtype in (torch.float16, torch.bfloat16), "flash-attn takes fp16 / bf16 only"
    return torch.stack([_attend(q[i], k[i], v[i], softmax_scale, causal, window_size) for i in range(q.shape[0])])


def fake_varlen(q, k, v, cu_q, cu_k, max_q, max_k, softmax_scale=None, causal=False, window_size=(-1, -1)):
    assert q.dtype in (torch.float16, torch.bfloat16) and cu_q.dtype == torch.int32 and len(cu_q) == len(cu_k)
    out = torch.zeros_like(q)
    for i in range(len(cu_q) - 1):
        qs, ks = slice(int(cu_q[i]), int(cu_q[i + 1])), slice(int(cu_k[i]), int(cu_k[i + 1]))
        assert qs.stop - qs.start <= max_q and ks.stop - ks.start <= max_k
        out[qs] = _attend(q[qs], k[ks], v[ks], softmax_scale, causal, window_size)
    return out


@pytest.fixture
def fake_flash(monkeypatch):
    monkeypatch.setattr(flash_mod, "_import_flash", lambda: (fake_flash_attn_func, fake_varlen))
    monkeypatch.setattr(flash_mod, "_check_inputs", lambda q: flash_mod._check_dtype(q))


@pytest.mark.parametrize("tq,tk,padded,docs", [(6, 6, False, False), (6, 6, True, False), (6, 6, False, True),
                                               (1, 6, True, False), (2, 6, True, False)])
def test_flash_paths_equal_eager(fake_flash, tq, tk, padded, docs):
    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 2, t, 8).bfloat16() for t in (tq, tk, tk))
    kpm = torch.tensor([[True, True, False, False, False, False], [False] * 6, [True] + [False] * 5]) if padded \
        else None
    doc = torch.tensor([[0, 0, 1, 1, 1, 2]] * 3) if docs else None
    got = flash_mod.flash_attention(q, k, v, causal=True, key_padding_mask=kpm, doc_ids=doc)
    want = eager_attention(q.float(), k.float(), v.float(), causal=True, key_padding_mask=kpm, doc_ids=doc)
    if kpm is not None:  # padded query rows are zeros in flash, undefined elsewhere: compare the real ones
        real = ~kpm[:, tk - tq:]
        got, want = got.transpose(1, 2)[real], want.transpose(1, 2)[real]
    assert torch.allclose(got.float(), want, atol=3e-2)


def test_flash_refuses_fp32_and_cpu_with_the_fix():
    q = torch.randn(1, 1, 2, 8)
    with pytest.raises(ValueError, match="CUDA only"):
        flash_mod._check_inputs(q)
    with pytest.raises(ValueError, match="fp16 / bf16 only.*autocast"):
        flash_mod._check_dtype(q)


def test_decoder_trains_and_decodes_with_flash_under_bf16_autocast(fake_flash):
    from genrec.config import DecoderConfig
    from genrec.models.decoder import DecoderRecommender

    sizes = [4, 3, 2]
    codes = torch.cat([torch.zeros(1, 3, dtype=torch.long),
                       torch.tensor(list(itertools.product(*(range(s) for s in sizes)))[:15])])
    torch.manual_seed(0)
    m = DecoderRecommender(DecoderConfig(dim=16, layers=2, heads=2, pack=False), "flash", codes, sizes, max_history=4,
                           beam_size=5)
    batch = {"user": torch.tensor([3, 8]), "history": torch.tensor([[0, 0, 3, 7], [1, 2, 3, 4]]),
             "target": torch.tensor([5, 6])}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = m(batch).loss
        loss.backward()
        m.eval()
        items, _ = m.recommend(batch, k=5)  # beams share each user's history cache (softmax without flash)
        step_fn = m.make_step_fn(batch, share_history=False)  # flash's own cached one-token steps, padded rows
        logp = [step_fn(level, torch.zeros(10, level, dtype=torch.long), torch.arange(10)) for level in range(3)]
    assert torch.isfinite(loss) and ((items >= 1) & (items <= 15)).all()
    assert all(torch.isfinite(x).all() for x in logp) and [x.shape for x in logp] == [(10, 4), (10, 3), (10, 2)]
