"""Each kernel against its reference: softmax kernels against ``eager``; linear and hstu against naive forms."""
from __future__ import annotations

import sys

import pytest
import torch

from genrec.attention import ATTENTION, get_attention
from genrec.attention.eager import eager_attention
from genrec.attention.flash import flash_attention
from genrec.attention.flex import flex_attention
from genrec.attention.hstu import hstu_attention, hstu_attention_reference
from genrec.attention.linear import linear_attention, linear_attention_reference
from genrec.attention.masks import build_mask
from genrec.attention.sdpa import sdpa_attention


def qkv(b=2, h=2, t=7, dh=8, tq=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, tq or t, dh, generator=g)
    k = torch.randn(b, h, t, dh, generator=g)
    v = torch.randn(b, h, t, dh, generator=g)
    return q, k, v


def left_padding(b=2, t=7):
    pad = torch.zeros(b, t, dtype=torch.bool)
    pad[0, :3] = True  # row 0 has 3 padding tokens on the left; row 1 none
    return pad


def docs():
    return torch.tensor([[0, 0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 1, 1, 2]])


def test_get_attention_lists_choices_on_a_miss():
    assert get_attention("eager") is eager_attention
    with pytest.raises(ValueError, match=r"model.attention='sdp' .*'sdpa'"):
        get_attention("sdp")
    assert set(ATTENTION) == {"eager", "sdpa", "flash", "flex", "linear", "hstu"}


def test_eager_matches_explicit_softmax():
    q, k, v = qkv(b=1, h=1, t=4)
    out = eager_attention(q, k, v, causal=True)
    for i in range(4):
        w = torch.softmax(q[0, 0, i] @ k[0, 0, : i + 1].T / 8**0.5, dim=-1)
        torch.testing.assert_close(out[0, 0, i], w @ v[0, 0, : i + 1])


def test_eager_fully_masked_rows_are_zero_and_grads_finite():
    q, k, v = (x.requires_grad_() for x in qkv())
    out = eager_attention(q, k, v, key_padding_mask=left_padding())
    assert torch.all(out[0, :, :3] == 0)
    out.sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v))


def test_sdpa_fully_masked_rows_are_zero_where_the_backend_gives_nan(sdpa_nan_on_empty_rows):
    q, k, v = (x.requires_grad_() for x in qkv())
    out = sdpa_attention(q, k, v, key_padding_mask=left_padding())  # row 0's 3 padding queries see no key
    assert torch.all(out[0, :, :3] == 0)
    torch.testing.assert_close(out, eager_attention(q, k, v, key_padding_mask=left_padding()))
    out.sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v))


def test_build_mask_is_bottom_right_aligned_for_decoding():
    m = build_mask(2, 5, causal=True)
    assert m[0, 0].tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    w = build_mask(1, 5, causal=True, window=2)
    assert w[0, 0, 0].tolist() == [False, False, False, True, True]


@pytest.mark.parametrize("kernel", [sdpa_attention, flex_attention], ids=["sdpa", "flex"])
@pytest.mark.parametrize(
    "opts",
    [
        dict(causal=True),
        dict(causal=False),
        dict(causal=True, key_padding_mask="pad"),
        dict(causal=True, window=3),
        dict(causal=True, doc_ids="docs"),
        dict(causal=True, window=2, doc_ids="docs", key_padding_mask="pad"),
    ],
    ids=["causal", "full", "padding", "window", "docs", "all"],
)
def test_softmax_kernel_matches_eager(kernel, opts):
    opts = dict(opts)
    if opts.get("key_padding_mask") == "pad":
        opts["key_padding_mask"] = left_padding()
    if opts.get("doc_ids") == "docs":
        opts["doc_ids"] = docs()
    q, k, v = qkv()
    torch.testing.assert_close(kernel(q, k, v, **opts), eager_attention(q, k, v, **opts))


@pytest.mark.parametrize("name", ["sdpa", "flex", "linear", "hstu"])
def test_decode_step_equals_last_row_of_full_pass(name):
    """One query against a cache of Tk keys gives the last row of the full causal pass (bottom-right alignment)."""
    fn = get_attention(name)
    q, k, v = qkv()
    pad = left_padding()
    full = fn(q, k, v, causal=True, key_padding_mask=pad)
    step = fn(q[:, :, -1:], k, v, causal=True, key_padding_mask=pad)
    torch.testing.assert_close(step, full[:, :, -1:])
    two = fn(q[:, :, -2:], k, v, causal=True, key_padding_mask=pad)
    torch.testing.assert_close(two, full[:, :, -2:])


def test_sdpa_explicit_scale_matches_eager():
    q, k, v = qkv()
    torch.testing.assert_close(sdpa_attention(q, k, v, scale=0.3), eager_attention(q, k, v, scale=0.3))


@pytest.mark.parametrize("t", [5, 64, 150])
@pytest.mark.parametrize("causal", [True, False])
def test_linear_chunked_matches_quadratic_reference(t, causal):
    q, k, v = qkv(t=t, dh=4)
    pad = torch.zeros(2, t, dtype=torch.bool)
    pad[1, : t // 3] = True
    out = linear_attention(q, k, v, causal=causal, key_padding_mask=pad)
    ref = linear_attention_reference(q, k, v, causal=causal, key_padding_mask=pad)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    if causal:
        assert torch.all(out[1, :, : t // 3] == 0)


@pytest.mark.parametrize("opt", [dict(window=3), dict(doc_ids=torch.zeros(2, 7, dtype=torch.long)), dict(scale=0.5)])
def test_linear_rejects_unsupported_options(opt):
    q, k, v = qkv()
    with pytest.raises(ValueError, match="model.attention='linear'"):
        linear_attention(q, k, v, **opt)


@pytest.mark.parametrize(
    "opts",
    [dict(causal=True), dict(causal=False), dict(key_padding_mask="pad"), dict(window=3, doc_ids="docs")],
    ids=["causal", "full", "padding", "window+docs"],
)
def test_hstu_matches_loop_reference(opts):
    opts = dict(opts)
    if opts.get("key_padding_mask") == "pad":
        opts["key_padding_mask"] = left_padding()
    if opts.get("doc_ids") == "docs":
        opts["doc_ids"] = docs()
    q, k, v = qkv(dh=4)
    torch.testing.assert_close(hstu_attention(q, k, v, **opts), hstu_attention_reference(q, k, v, **opts))


def test_flex_refuses_backward_on_cpu():
    q, k, v = (x.requires_grad_() for x in qkv())
    with pytest.raises(ValueError, match="model.attention='flex' cannot train on CPU"):
        flex_attention(q, k, v)


def test_flash_missing_package_raises_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # makes `import flash_attn` fail
    q, k, v = qkv()
    with pytest.raises(ImportError, match=r"pip install 'genrec\[flash\]' \(CUDA only\) or use sdpa"):
        flash_attention(q, k, v)


@pytest.mark.gpu
@pytest.mark.parametrize("opts", [dict(causal=True), dict(causal=True, key_padding_mask="pad"), dict(doc_ids="docs")])
def test_flash_matches_eager_on_cuda(opts):
    if not torch.cuda.is_available():
        pytest.skip("flash-attn kernels run on CUDA only; no GPU here")
    pytest.importorskip("flash_attn", reason="flash-attn is not installed (pip install 'genrec[flash]')")
    opts = dict(opts)
    if opts.get("key_padding_mask") == "pad":
        opts["key_padding_mask"] = left_padding().cuda()
    if opts.get("doc_ids") == "docs":
        opts["doc_ids"] = docs().cuda()
    q, k, v = (x.cuda().half() for x in qkv(dh=16))
    out = flash_attention(q, k, v, **opts).float()
    ref = eager_attention(*(x.float() for x in (q, k, v)), **opts)
    torch.testing.assert_close(out, ref, rtol=2e-3, atol=2e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["sdpa", "flex"])
def test_softmax_kernels_match_eager_on_cuda(name):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    q, k, v = (x.cuda() for x in qkv(t=130, dh=16))
    pad = torch.zeros(2, 130, dtype=torch.bool, device="cuda")
    pad[0, :40] = True
    opts = dict(causal=True, window=17, key_padding_mask=pad)
    torch.testing.assert_close(get_attention(name)(q, k, v, **opts), eager_attention(q, k, v, **opts), rtol=1e-3, atol=1e-3)
