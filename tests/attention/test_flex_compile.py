"""FlexAttention as it runs on CUDA: compiled with dynamic shapes, one block mask per forward.

The compiled path is exercised on CPU through dynamo with a counting backend ("eager" codegen): what is tested is
what goes wrong on a GPU, recompiling per shape until dynamo gives up and runs the unfused kernel, not inductor's
code. A static compile (``dynamic=False``) makes 8+ graphs for the shapes below and falls back after that.
"""
import pytest
import torch

from genrec.attention import flex
from genrec.attention.eager import eager_attention

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def counted_flex(monkeypatch):
    """The CUDA path of ``flex_attention`` on CPU tensors, compiled by a backend that counts its graphs."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("eager")
    monkeypatch.setattr(flex, "COMPILE_BACKEND", counter)
    monkeypatch.setattr(flex, "_use_compiled", lambda q: True)
    yield counter
    flex._COMPILED.pop(counter, None)
    torch._dynamo.reset()


@torch.no_grad()
def test_many_lengths_compile_a_bounded_number_of_graphs(counted_flex):
    g = torch.Generator().manual_seed(0)
    graphs_after_first_lengths = None
    for n, tk in enumerate(range(5, 70, 8)):
        for tq in (tk, 1):  # a training forward and a cached decode step
            for window in (0, 4):
                q = torch.randn(2, 2, tq, 8, generator=g)
                k, v = torch.randn(2, 2, tk, 8, generator=g), torch.randn(2, 2, tk, 8, generator=g)
                pad = torch.zeros(2, tk, dtype=torch.bool)
                pad[0, : tk // 3] = True
                out = flex.flex_attention(q, k, v, causal=True, window=window, key_padding_mask=pad)
                ref = eager_attention(q, k, v, causal=True, window=window, key_padding_mask=pad)
                torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        if n == 1:
            graphs_after_first_lengths = counted_flex.frame_count
    # every graph is made by the first two lengths; six more lengths add none (one graph per mask kind at most)
    assert counted_flex.frame_count == graphs_after_first_lengths <= 4
    assert counted_flex.frame_count < torch._dynamo.config.recompile_limit


@torch.no_grad()
def test_one_block_mask_per_forward(monkeypatch):
    from tests.models.test_decoder import make_batch, make_model

    built = []
    real = flex._create_block_mask
    monkeypatch.setattr(flex, "_create_block_mask", lambda *a, **kw: built.append(a[2:4]) or real(*a, **kw))
    flex._LAST_MASK.clear()
    m = make_model("flex", layers=3)
    ref = make_model("eager", layers=3)
    ref.load_state_dict(m.state_dict())
    batch = make_batch()
    torch.testing.assert_close(m.target_log_probs(batch), ref.target_log_probs(batch), rtol=1e-5, atol=1e-5)
    assert len(built) == 1, f"{len(built)} block masks built for one forward of 3 layers"


def test_a_changed_mask_is_not_reused():
    q = k = v = torch.randn(1, 1, 6, 4)
    pad = torch.zeros(1, 6, dtype=torch.bool)
    first = flex.flex_attention(q, k, v, key_padding_mask=pad)
    pad[0, :3] = True  # same tensor object, new contents
    second = flex.flex_attention(q, k, v, key_padding_mask=pad)
    torch.testing.assert_close(second, eager_attention(q, k, v, key_padding_mask=pad), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(first, second)
