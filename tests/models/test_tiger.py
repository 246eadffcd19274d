"""TigerModel: T5 parity of the paper config, loss, cached decoding vs teacher forcing, beam-search outputs."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from genrec.config import TigerConfig
from genrec.generation import exhaustive_scores
from genrec.models.tiger import NUM_SPECIAL, TigerModel, hash_user

L, K = 3, 4


def tiny_cfg(**kw) -> TigerConfig:
    base = dict(d_model=16, d_kv=8, num_heads=2, d_ff=32, encoder_layers=2, decoder_layers=2, dropout=0.0,
                num_user_tokens=5)
    return dataclasses.replace(TigerConfig(), **{**base, **kw})


def catalog(n: int = 12, seed: int = 0) -> torch.Tensor:
    """(n + 1, L) distinct codes, row 0 = padding."""
    g = torch.Generator().manual_seed(seed)
    all_codes = torch.cartesian_prod(*[torch.arange(K)] * L)
    rows = all_codes[torch.randperm(len(all_codes), generator=g)[:n]]
    return torch.cat([torch.zeros(1, L, dtype=torch.long), rows])


def batch_of(B: int, T: int, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hist = torch.randint(1, n + 1, (B, T), generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    hist[torch.arange(T)[None, :] < (T - lengths)[:, None]] = 0  # left padding
    return {"user": torch.arange(B) * 7 + 3, "history": hist, "target": torch.randint(1, n + 1, (B,), generator=g)}


def expected_t5_params(d: int, dkv: int, h: int, dff: int, enc: int, dec: int, vocab: int, buckets: int = 32) -> int:
    """Parameter count of a T5 (ReLU MLP, tied embeddings/head, no biases) written out by hand."""
    attn = 4 * d * h * dkv  # q, k, v, o
    mlp = 2 * d * dff
    enc_layer = attn + mlp + 2 * d  # + 2 RMS norms
    dec_layer = 2 * attn + mlp + 3 * d  # self + cross attention, 3 norms
    rel_bias = buckets * h  # first layer of each stack
    return vocab * d + enc * enc_layer + dec * dec_layer + 2 * rel_bias + 2 * d  # + final norms


def test_tiger_paper_config_matches_t5_count():
    codes = torch.zeros(12102, 4, dtype=torch.long)  # Beauty-sized catalog, 3 x 256 codes + a collision digit
    sizes = [256, 256, 256, 16]
    m = TigerModel(TigerConfig(), codes, sizes)
    vocab = NUM_SPECIAL + 2000 + sum(sizes)
    assert m.vocab_size == vocab
    n = sum(p.numel() for p in m.parameters())
    assert n == expected_t5_params(128, 64, 6, 1024, 4, 4, vocab)
    # 4.8M: the transformer is ~4.5M whatever the catalog; the paper's "~13M" is not reachable with 4+4 layers of
    # d=128, 6x64 heads, d_ff=1024 (its quoted hyper-parameters), so we report the exact figure.
    assert 4_500_000 < n < 5_000_000
    assert m.t5.config.feed_forward_proj == "relu" and m.t5.config.dropout_rate == 0.1
    assert m.t5.generation_config.do_sample is False


def test_tiger_user_token_depends_only_on_user():
    m = TigerModel(tiny_cfg(num_user_tokens=5), catalog(), [K] * L).eval()
    b1 = batch_of(6, 4, 12, seed=1)
    b2 = {**batch_of(6, 4, 12, seed=2), "user": b1["user"]}
    ids1, mask1, _ = m.encoder_inputs(b1)
    ids2, mask2, _ = m.encoder_inputs(b2)
    first = lambda ids, mask: ids.gather(1, mask.argmax(1, keepdim=True)).squeeze(1)  # first real token
    assert torch.equal(first(ids1, mask1), first(ids2, mask2))
    assert torch.equal(first(ids1, mask1), NUM_SPECIAL + hash_user(b1["user"], 5))
    assert torch.equal(hash_user(torch.tensor([42, 42, 43]), 5)[:2], hash_user(torch.tensor([42, 42]), 5))
    # layout: pads, then user, then L codes per history item in time order
    n_items = (b1["history"] > 0).sum(1)
    assert torch.equal(mask1.sum(1), 1 + L * n_items)


def test_tiger_chunked_encoder_equals_padded():
    m = TigerModel(tiny_cfg(), catalog(), [K] * L).eval()
    b = batch_of(9, 5, 12)
    ids, mask, _ = m.encoder_inputs(b)
    full = m.encode(ids, mask)
    m.encoder_chunk = 2
    chunked = m.encode(ids, mask)
    real = mask.bool()
    torch.testing.assert_close(chunked[real], full[real], atol=1e-5, rtol=1e-5)


def test_tiger_loss_finite_and_decreases():
    torch.manual_seed(0)
    m = TigerModel(tiny_cfg(), catalog(), [K] * L)
    b = batch_of(8, 4, 12)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        out = m(b)
        assert out.logits.shape == (8, L, m.vocab_size)
        losses.append(out.loss.item())
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.5


@pytest.mark.parametrize("softmax,extras", [("full", {}), ("level", {}),
                                            ("full", {"recency_positions": 4, "encoder_eos": True})])
def test_tiger_cached_decoding_equals_teacher_forcing(softmax, extras):
    torch.manual_seed(0)
    n = 12
    codes = catalog(n)
    m = TigerModel(tiny_cfg(softmax=softmax, **extras), codes, [K] * L).eval()
    b = batch_of(3, 4, n)
    with torch.no_grad():
        cached = exhaustive_scores(m.make_step_fn(b), codes[1:], batch_size=3)  # (B, N) via the KV cache
        full = torch.stack([  # one full decoder pass per item
            m.teacher_forced_log_probs(b, codes[i].expand(3, L)).gather(2, codes[i].expand(3, L)[..., None]).sum((1, 2))
            for i in range(1, n + 1)
        ], dim=1)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
    if softmax == "level":  # each level's distribution sums to one over its own codes
        lp = m.teacher_forced_log_probs(b, codes[1].expand(3, L))
        torch.testing.assert_close(lp.exp().sum(-1), torch.ones(3, L))


def test_tiger_recommend_matches_exhaustive_ranking():
    torch.manual_seed(0)
    n = 12
    codes = catalog(n)
    m = TigerModel(tiny_cfg(), codes, [K] * L, beam_size=n).eval()  # W >= N: beam search is exact
    b = batch_of(5, 4, n)
    items, scores = m.recommend(b, k=5)
    with torch.no_grad():
        ref = exhaustive_scores(m.make_step_fn(b), codes[1:], batch_size=5)
    top = ref.topk(5, dim=1)
    assert torch.equal(items, top.indices + 1)
    torch.testing.assert_close(scores, top.values, atol=1e-5, rtol=1e-5)
    m.encoder_chunk = 2  # length-sorted chunks give the same answer
    items2, _ = m.recommend(b, k=5)
    assert torch.equal(items2, items)


def test_tiger_recommend_valid_distinct_items():
    n = 12
    m = TigerModel(tiny_cfg(), catalog(n), [K] * L, beam_size=4).eval()
    items, scores = m.recommend(batch_of(6, 4, n), k=3)
    assert items.shape == scores.shape == (6, 3)
    assert ((items >= 1) & (items <= n)).all()
    assert all(len(set(row.tolist())) == 3 for row in items)
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # best first


def test_tiger_learns_deterministic_rule():
    """Next item = history's last item + 1 (mod N): after training, recommend() puts it first."""
    torch.manual_seed(0)
    n = 12
    m = TigerModel(tiny_cfg(d_model=32, d_ff=64), catalog(n), [K] * L, beam_size=4)
    hist = torch.stack([torch.tensor([(s + j) % n + 1 for j in range(3)]) for s in range(n)])  # (N, 3)
    batch = {"user": torch.arange(n), "history": hist, "target": hist[:, -1] % n + 1}
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(150):
        loss = m(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    items, _ = m.recommend(batch, k=3)
    assert (items[:, 0] == batch["target"]).float().mean() == 1.0


def test_tiger_rejects_bad_inputs():
    with pytest.raises(ValueError, match="codebook_sizes"):
        TigerModel(tiny_cfg(), catalog(), [K] * (L - 1))
    with pytest.raises(ValueError, match="softmax"):
        TigerModel(tiny_cfg(softmax="sparse"), catalog(), [K] * L)
    with pytest.raises(ValueError, match="outside"):
        TigerModel(tiny_cfg(), catalog(), [2] * L)


def test_tiger_recency_and_eos_layout():
    m = TigerModel(tiny_cfg(recency_positions=4, encoder_eos=True), catalog(), [K] * L).eval()
    hist = torch.tensor([[0, 0, 5, 9], [1, 2, 3, 4]])
    b = {"user": torch.tensor([3, 10]), "history": hist, "target": torch.tensor([1, 2])}
    ids, mask, rec = m.encoder_inputs(b)
    # row 0: pads, user, 3 codes of item 5 (recency 2), 3 codes of item 9 (recency 1), eos
    assert mask[0].sum() == 1 + 2 * L + 1 and ids[0, -1] == 1 and rec[0, -1] == 0
    assert rec[0, -1 - L : -1].tolist() == [1] * L and rec[0, -1 - 2 * L : -1 - L].tolist() == [2] * L
    assert torch.equal(ids[0, -1 - L : -1], m.item_tokens(torch.tensor(9)))
    assert rec[1].tolist() == [0] + [4] * L + [3] * L + [2] * L + [1] * L + [0]
    assert (rec[mask == 0] == 0).all()


def test_tiger_recency_embedding_is_added_to_the_encoder_input_and_chunks_agree():
    torch.manual_seed(0)
    plain = TigerModel(tiny_cfg(), catalog(), [K] * L).eval()
    with_rec = TigerModel(tiny_cfg(recency_positions=12), catalog(), [K] * L).eval()
    missing = with_rec.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing == ["recency.weight"]
    b = batch_of(9, 12, 12)
    ids, mask, rec = with_rec.encoder_inputs(b)
    with torch.no_grad():
        with_rec.recency.weight.zero_()  # a zero embedding is plain T5
    torch.testing.assert_close(with_rec.encode(ids, mask, rec), plain.encode(ids, mask, rec))
    torch.nn.init.normal_(with_rec.recency.weight)  # now positions matter, and chunking must keep them
    full = with_rec.encode(ids, mask, rec)
    assert not torch.allclose(full, plain.encode(ids, mask, rec))
    with_rec.encoder_chunk = 2
    real = mask.bool()
    torch.testing.assert_close(with_rec.encode(ids, mask, rec)[real], full[real], atol=1e-5, rtol=1e-5)
