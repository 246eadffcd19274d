"""SASRec with HSTU's baseline details (``model.sasrec.reference_details`` + ``mask_padding``) computes what HSTU's
research code computes (research/modeling/sequential/sasrec.py) on right-padded rows, from the same weights."""
import torch
import torch.nn.functional as F

from genrec.attention import ATTENTION
from genrec.models.sasrec import SASRec


def research_forward(m: SASRec, seq: torch.Tensor) -> torch.Tensor:
    """The research code's forward, written from its description: right-padded ids, positions 0.. from the oldest
    item, padding zeroed, a causal mask only, weightless layer norms, feed-forward with its own residual, the valid
    mask after every block, no final norm, then the L2 norm."""
    B, T = seq.shape
    valid = (seq != 0)[..., None].float()
    x = (m.item_emb(seq) * m.hidden ** 0.5 + m.pos_emb(torch.arange(T))) * valid
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    for blk in m.blocks:
        q = F.layer_norm(x, (m.hidden,), eps=1e-8)
        y = F.layer_norm(q + blk.attn(q, x, x, attn_mask=causal, need_weights=False)[0], (m.hidden,), eps=1e-8)
        x = (y + blk.ff(y)) * valid
    return F.normalize(x, dim=-1, eps=1e-6)


def test_reference_details_compute_the_research_code_forward_on_right_padded_rows():
    torch.manual_seed(0)
    m = SASRec(num_items=30, max_len=7, hidden=8, heads=1, dropout=0.0, l2_norm=True, mask_padding=True,
               reference=True).eval()
    assert not [n for n, _ in m.named_parameters() if "ln" in n]  # no layer-norm scale or shift, no final norm
    assert any(b.ff[0].bias.abs().sum() > 0 for b in m.blocks)  # feed-forward biases keep PyTorch's init
    lengths = [7, 4, 1, 5]
    items = torch.randint(1, 31, (len(lengths), 7))
    left = torch.zeros_like(items)
    right = torch.zeros_like(items)
    for i, n in enumerate(lengths):
        left[i, 7 - n:] = items[i, :n]
        right[i, :n] = items[i, :n]
    with torch.no_grad():
        ours, theirs = m.encode(left), research_forward(m, right)
    for i, n in enumerate(lengths):
        assert torch.allclose(ours[i, 7 - n:], theirs[i, :n], atol=1e-5)


def test_without_reference_details_the_final_norm_and_affine_norms_stay():
    m = SASRec(num_items=30, max_len=7, hidden=8, heads=1, dropout=0.0)
    assert isinstance(m.ln, torch.nn.LayerNorm) and m.blocks[0].ln1.weight is not None
    assert all(b.ff[0].bias.abs().sum() == 0 for b in m.blocks)  # zero biases, Xavier weights: the default init


def test_reference_initialisation_draws_the_research_code_tables():
    """Items truncated N(0, 0.02) and positions truncated N(0, 1/D), cut at two standard deviations (the padding row
    included: the research code draws the whole table); every block matrix Xavier-normal."""
    torch.manual_seed(0)
    m = SASRec(num_items=4000, max_len=200, hidden=50, layers=2, heads=1, dropout=0.0, mask_padding=True,
               reference=True)
    cut = 0.8796  # the standard deviation of a normal truncated at two of its standard deviations
    for table, std in ((m.item_emb.weight, 0.02), (m.pos_emb.weight, 50 ** -0.5)):
        assert table.abs().max() <= 2 * std + 1e-7
        assert abs(table.std().item() / (std * cut) - 1) < 0.03
    w = m.blocks[0].attn.in_proj_weight  # (3D, D): Xavier std sqrt(2 / (fan_in + fan_out)), normal not uniform
    std = (2 / (50 + 150)) ** 0.5
    assert abs(w.std().item() / std - 1) < 0.05 and w.abs().max() > 3 ** 0.5 * std  # PyTorch's default: uniform


def _left_padded(lengths, T, n_items=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    seq = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        seq[i, T - n:] = torch.randint(1, n_items + 1, (n,), generator=g)
    return seq


def test_kernel_attention_equals_multihead_attention_on_the_same_weights():
    """model.sasrec.attention=sdpa / eager run the kernel on MultiheadAttention's own projections: the same states in
    evaluation, with and without masked padding, and the same state dict (a checkpoint loads either way)."""
    seq = _left_padded([7, 4, 1, 5], 7)
    for mask_padding in (False, True):
        torch.manual_seed(0)
        mha = SASRec(num_items=30, max_len=7, hidden=8, heads=2, dropout=0.0, mask_padding=mask_padding).eval()
        for kernel in ("sdpa", "eager"):
            other = SASRec(num_items=30, max_len=7, hidden=8, heads=2, dropout=0.0, mask_padding=mask_padding,
                           attention=kernel).eval()
            other.load_state_dict(mha.state_dict())
            assert all(b.kernel is ATTENTION[kernel] for b in other.blocks)  # the kernel path, not mha again
            with torch.no_grad():
                assert torch.allclose(other.encode(seq), mha.encode(seq), atol=1e-5), (kernel, mask_padding)


def test_sliding_window_limits_each_position_to_its_recent_items():
    """With masked padding and window w, a position's state depends on its w most recent items only (one layer):
    changing an older item leaves it unchanged, changing one inside the window does not; a window as long as the
    sequence equals no window."""
    torch.manual_seed(0)
    m = SASRec(num_items=30, max_len=8, hidden=8, layers=1, heads=1, dropout=0.0, mask_padding=True,
               attention="sdpa", window=3).eval()
    seq = _left_padded([8], 8)
    older, inside = seq.clone(), seq.clone()
    older[0, 4] = seq[0, 4] % 30 + 1  # 3 positions before the last one (7): outside its window {5, 6, 7}
    inside[0, 5] = seq[0, 5] % 30 + 1
    with torch.no_grad():
        h, h_old, h_in = m.encode(seq)[0, -1], m.encode(older)[0, -1], m.encode(inside)[0, -1]
        assert torch.allclose(h, h_old, atol=1e-6) and not torch.allclose(h, h_in, atol=1e-4)
        full = SASRec(num_items=30, max_len=8, hidden=8, layers=1, heads=1, dropout=0.0, mask_padding=True,
                      attention="sdpa", window=8).eval()
        full.load_state_dict(m.state_dict())
        dense = SASRec(num_items=30, max_len=8, hidden=8, layers=1, heads=1, dropout=0.0, mask_padding=True,
                       attention="sdpa").eval()
        dense.load_state_dict(m.state_dict())
        assert torch.allclose(full.encode(seq), dense.encode(seq), atol=1e-6)


def test_linear_and_hstu_kernels_train_and_mha_refuses_a_window():
    import pytest

    seq = _left_padded([6, 3], 6)
    labels = torch.roll(seq, -1, dims=1).masked_fill(seq == 0, 0)
    torch.manual_seed(0)
    mha = SASRec(num_items=30, max_len=6, hidden=8, heads=2, dropout=0.0, mask_padding=True).eval()
    for kernel in ("linear", "hstu"):
        m = SASRec(num_items=30, max_len=6, hidden=8, heads=2, dropout=0.1, mask_padding=True, attention=kernel)
        m.load_state_dict(mha.state_dict())
        with torch.no_grad():  # other mathematics than softmax: other states from the same weights
            assert not torch.allclose(m.eval().encode(seq), mha.encode(seq), atol=1e-3)
        m.train()({"input": seq, "labels": labels}).loss.backward()
        grads = [p.grad for p in m.blocks.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert m.blocks[0].attn.in_proj_weight.grad.abs().sum() > 0
    for attention in ("mha", "linear"):
        with pytest.raises(ValueError, match="model.sasrec.window=3 needs a kernel with a window"):
            SASRec(num_items=30, max_len=6, attention=attention, window=3)


def test_config_reaches_the_blocks():
    from genrec.config import load_config
    from genrec.models.base import ModelContext

    cfg = load_config(["configs/sasrec/ml-1m.yaml"], ["model.sasrec.attention=hstu", "model.sasrec.window=50",
                                                       "model.sasrec.mask_padding=true"])
    m = SASRec.from_config(cfg, ModelContext(num_items=40, num_users=5))
    assert all(b.kernel is ATTENTION["hstu"] and b.window == 50 for b in m.blocks)
