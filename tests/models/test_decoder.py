"""DecoderRecommender: loss, right alignment, cached decoding == full forward, constrained recommend."""
from __future__ import annotations

import itertools

import pytest
import torch

from genrec.config import DecoderConfig
from genrec.models.decoder import PAD, DecoderRecommender

K = [4, 3, 2]  # codebook sizes of a tiny catalog: 4 * 3 * 2 = 24 possible paths


def tiny_codes(n=15, seed=0):
    g = torch.Generator().manual_seed(seed)
    paths = list(itertools.product(*(range(k) for k in K)))
    pick = torch.randperm(len(paths), generator=g)[:n]
    codes = torch.tensor([paths[i] for i in pick])
    return torch.cat([torch.zeros(1, len(K), dtype=torch.long), codes])  # (N + 1, L), row 0 = padding


def make_model(attention="sdpa", n=15, **kw):
    torch.manual_seed(0)
    opts = dict(dim=16, layers=2, heads=2, dropout=0.0, num_user_tokens=5, mlp_ratio=2.0)
    opts.update(kw)
    m = DecoderRecommender(DecoderConfig(**opts), attention, tiny_codes(n), K, max_history=4, beam_size=6).eval()
    if m.prefix_embed is not None:
        with torch.no_grad():  # rows far from zero, so that a misplaced prefix id moves every score
            m.prefix_embed.weight[1:].normal_(0, 1.0)
    return m


def make_batch():
    history = torch.tensor([[0, 0, 3, 7], [1, 2, 3, 4], [0, 0, 0, 9]])  # left-padded, different lengths
    return {"user": torch.tensor([11, 4, 7]), "history": history, "target": torch.tensor([5, 6, 15])}


def test_tokens_are_right_aligned_and_trimmed():
    m = make_model()
    seq, pids = m.tokens(make_batch(), with_target=True)
    assert seq.shape == (3, 2 + 5 * 3) and pids is None  # the longest row: bos, user, 4 history items + target
    assert torch.equal(seq[:, -3:], m.sid_codes[make_batch()["target"]] + m.offsets)
    assert (seq[2, :9] == PAD).all() and (seq[2, 9:] != PAD).all()  # bos, user, 2 items: 9 pads in front


def test_prefix_ids_follow_their_tokens():
    """Each code token carries the id of its item's prefix up to it; bos, user and padding carry 0."""
    m = make_model(prefix_embedding=True)
    batch = make_batch()
    seq, pids = m.tokens(batch, with_target=True)
    assert pids.shape == seq.shape and ((pids == 0) | (seq >= m.offsets_list[0])).all()
    assert torch.equal(pids[:, -3:], m.vocab.prefix_ids(batch["target"]))
    assert torch.equal(pids[1, 2:5], m.vocab.prefix_ids(batch["history"][1, 0]))  # row 1's first history item
    assert (pids[2, :12] == 0).all() and pids[2, 12] > 0  # 9 pads, bos, user, item 9's level-0 code; then its level 1
    assert (pids[:, -3] == 0).all() and (pids[:, -2:] > 0).all()


def test_the_prefix_embedding_reaches_the_loss():
    """Prefix rows change the loss, and a prefix row of an item outside the batch does not."""
    m = make_model(prefix_embedding=True)
    batch = make_batch()
    base = m(batch).loss
    used = m.tokens(batch, with_target=True)[1].unique()
    unused = [j for j in range(1, m.vocab.num_prefixes + 1) if j not in used.tolist()]
    with torch.no_grad():
        m.prefix_embed.weight[unused] += 1.0
        torch.testing.assert_close(m(batch).loss, base)
        m.prefix_embed.weight[used[used > 0]] += 1.0
    assert not torch.isclose(m(batch).loss, base)


def test_forward_loss_and_backward():
    m = make_model().train()
    out = m(make_batch())
    assert out.logits.shape == (3, 3, max(K)) and torch.isfinite(out.loss)
    assert out.loss.item() == pytest.approx(sum(torch.log(torch.tensor(float(k))) for k in K).item() / 3, rel=0.2)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_loss_on_all_scores_every_item():
    batch = make_batch()
    target_only = make_model()(batch).loss
    everything = make_model(loss_on="all")(batch).loss
    assert torch.isfinite(everything) and not torch.isclose(target_only, everything)


def test_prefix_output_scores_a_code_by_the_row_it_completes():
    """Last level: log p(c | prefix) is the softmax of h . (code row + row of the item the code completes)."""
    m = make_model(prefix_embedding=True, prefix_output=True)
    g = torch.Generator().manual_seed(1)
    h = torch.randn(5, 16, generator=g)
    items = torch.tensor([1, 4, 8, 11, 15])
    prefix = m.sid_codes[items, :2]  # each item's first two codes
    lp = m.level_log_probs(h, 2, prefix)
    codes = m.embed.weight[m.vocab.level_slice(2)]
    want = []
    for r in range(5):
        row = h[r] @ codes.t()
        for c in range(K[2]):
            item = m.trie().lookup(torch.cat([prefix[r], torch.tensor([c])])[None])
            if item > 0:  # this code completes an item: add that item's row
                row[c] = row[c] + h[r] @ m.prefix_embed.weight[m.vocab.prefix_ids(item)[0, 2]]
        want.append(row.log_softmax(-1))
    torch.testing.assert_close(lp, torch.stack(want), rtol=1e-5, atol=1e-5)
    plain = make_model(prefix_embedding=True)
    plain.load_state_dict(m.state_dict())
    assert (plain.level_log_probs(h, 2) - lp).abs().max() > 0.1  # the rows move the scores


@pytest.mark.parametrize("buckets", [4, 26, 100])
def test_prefix_buckets_score_as_the_full_table_with_shared_rows(buckets):
    """A table of B prefix rows trains and decodes as the one-row-per-prefix table whose row i is row
    1 + (i - 1) mod B of the B-row table (B below, at and above the 26 prefixes of the tiny catalog)."""
    from genrec.generation import exhaustive_scores

    full = make_model(prefix_embedding=True, prefix_output=True)
    n = full.vocab.num_prefixes
    assert n == 26  # 11 prefixes of two codes and 15 items: the cases above stay below, at and above it
    hashed = make_model(prefix_embedding=True, prefix_output=True, prefix_buckets=buckets)
    assert hashed.prefix_embed.num_embeddings == min(buckets, n) + 1
    rows = hashed._prefix_rows(torch.arange(n + 1))
    assert rows[0] == 0 and rows[1:].max() == min(buckets, n) and (rows[1:] > 0).all()
    state = hashed.state_dict()
    state["prefix_embed.weight"] = hashed.prefix_embed.weight.detach()[rows]
    full.load_state_dict(state)
    batch = make_batch()
    with torch.no_grad():
        torch.testing.assert_close(hashed(batch).loss, full(batch).loss)
        torch.testing.assert_close(exhaustive_scores(hashed.make_step_fn(batch), hashed.sid_codes[1:], batch_size=3),
                                   exhaustive_scores(full.make_step_fn(batch), full.sid_codes[1:], batch_size=3))


@pytest.mark.parametrize(
    "attention,kw",
    [("sdpa", {}), ("eager", dict(positions="learned", mlp="gelu")), pytest.param("flex", dict(window=5), marks=pytest.mark.slow),
     ("linear", dict(pack=False)), ("hstu", {}), ("sdpa", dict(num_user_tokens=0)),
     ("sdpa", dict(prefix_embedding=True)), ("sdpa", dict(prefix_embedding=True, prefix_output=True))],
    ids=["sdpa", "eager-learned-gelu", "flex-window", "linear", "hstu", "no-user-token", "prefix-embedding",
         "prefix-output"],
)
def test_cached_decoding_equals_full_forward(attention, kw):
    """Teacher-forced log-probs of every item via the KV-cached step_fn equal those of one full forward pass."""
    from genrec.generation import exhaustive_scores

    m = make_model(attention, **kw)
    batch = make_batch()
    with torch.no_grad():
        cached = exhaustive_scores(m.make_step_fn(batch), m.sid_codes[1:], batch_size=3)  # (B, N)
        for item in (1, 8, 15):
            full = m.target_log_probs({**batch, "target": torch.full((3,), item)}).sum(-1)
            torch.testing.assert_close(cached[:, item - 1], full, rtol=1e-4, atol=1e-4)


def test_padding_does_not_change_a_users_scores():
    """Positions count real tokens only: extra left padding leaves the result unchanged."""
    m = make_model()
    short = {"user": torch.tensor([7]), "history": torch.tensor([[9]]), "target": torch.tensor([3])}
    padded = {"user": torch.tensor([7]), "history": torch.tensor([[0, 0, 0, 9]]), "target": torch.tensor([3])}
    together = {"user": torch.tensor([7, 4]), "history": torch.tensor([[0, 0, 0, 9], [1, 2, 3, 4]]),
                "target": torch.tensor([3, 3])}
    a, b = m.target_log_probs(short), m.target_log_probs(padded)
    c = m.target_log_probs(together)[:1]
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)


def test_recommend_returns_valid_distinct_items_ranked_like_exhaustive_search():
    from genrec.generation import exhaustive_scores

    m = make_model()
    batch = make_batch()
    items, scores = m.recommend(batch, k=5, beam_size=15)  # 15 beams >= N items: the search is exact
    assert items.shape == (3, 5) and scores.shape == (3, 5)
    assert ((items >= 1) & (items <= 15)).all()
    assert all(len(set(row.tolist())) == 5 for row in items)
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    with torch.no_grad():
        ref = exhaustive_scores(m.make_step_fn(batch), m.sid_codes[1:], batch_size=3)
    top = ref.topk(5, dim=1)
    torch.testing.assert_close(scores, top.values, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(scores, ref.gather(1, items - 1), rtol=1e-4, atol=1e-4)


SHARED_CASES = [("sdpa", {}), ("eager", {}), ("sdpa", dict(window=5)), ("sdpa", dict(window=1)), ("hstu", {}),
                ("hstu", dict(window=4)), ("hstu", dict(window=1)), ("linear", dict(pack=False)),
                ("sdpa", dict(num_user_tokens=0)), ("sdpa", dict(prefix_embedding=True)),
                ("hstu", dict(prefix_embedding=True, prefix_output=True)),
                pytest.param("flex", dict(window=5), marks=pytest.mark.slow)]
SHARED_IDS = ["sdpa", "eager", "sdpa-window", "sdpa-window-1", "hstu", "hstu-window", "hstu-window-1", "linear",
              "no-user-token", "prefix-embedding", "prefix-output", "flex-window"]  # a window of 1 is shorter than the generated codes


@pytest.mark.parametrize("attention,kw", SHARED_CASES, ids=SHARED_IDS)
def test_a_shared_history_cache_decodes_as_the_gathered_one(attention, kw, monkeypatch):
    """Beams that share their user's history cache get the scores and items of beams with a copy each."""
    from genrec.generation import constrained_beam_search, exhaustive_scores
    from genrec.models import decoder

    m = sharp(make_model(attention, **kw))
    batch = make_batch()  # rows of three history lengths: the shared cache must mask each user's own padding
    calls = []
    monkeypatch.setattr(decoder.HistoryBeamCache, "attend",
                        lambda self, *a, _f=decoder.HistoryBeamCache.attend: calls.append(1) or _f(self, *a))
    with torch.no_grad():
        shared = exhaustive_scores(m.make_step_fn(batch), m.sid_codes[1:], batch_size=3)
        assert len(calls) == 2 * 2  # levels 1 and 2, two layers: the default path is the shared one
        gathered = exhaustive_scores(m.make_step_fn(batch, share_history=False), m.sid_codes[1:], batch_size=3)
        assert len(calls) == 4
        torch.testing.assert_close(shared, gathered, rtol=1e-5, atol=1e-5)
        unpadded = {k: v[1:2] for k, v in batch.items()}  # no padding anywhere: the cache's mask is None
        torch.testing.assert_close(exhaustive_scores(m.make_step_fn(unpadded), m.sid_codes[1:], batch_size=1),
                                   gathered[1:2], rtol=1e-5, atol=1e-5)
        for beams in (4, 15):  # pruned and exact searches: the beams' own tokens are reordered by parent
            shared, gathered = (constrained_beam_search(m.make_step_fn(batch, share_history=share), m.trie(),
                                                        batch_size=3, beam_size=beams, device="cpu", num_return=4)
                                for share in (True, False))
            assert torch.equal(shared.items, gathered.items)
            torch.testing.assert_close(shared.scores, gathered.scores, rtol=1e-5, atol=1e-5)


def sharp(m):
    """Scale the attention projections so the tiny model's attention weights differ enough to be tested."""
    with torch.no_grad():
        for blk in m.blocks:
            blk.attn.qkv.weight.mul_(4.0)
    return m


@pytest.mark.parametrize("attention,window", [("sdpa", 5), ("hstu", 4)])
def test_a_window_shorter_than_the_row_changes_the_scores(attention, window):
    """The windowed cases above test something: a window hides most of a 14-token row, moving the scores by far
    more than their tolerance."""
    from genrec.generation import exhaustive_scores

    batch = make_batch()
    with torch.no_grad():
        full, windowed = (exhaustive_scores(sharp(make_model(attention, window=w)).make_step_fn(batch),
                                            make_model().sid_codes[1:], batch_size=3) for w in (0, window))
    assert (full - windowed).abs().max() > 1e-3


def test_the_path_follows_the_blocks_kernels():
    from genrec.attention import get_attention
    from genrec.generation import exhaustive_scores

    assert all(make_model(name, **kw).shares_history() for name, kw in
               [("sdpa", {}), ("flex", {}), ("hstu", {}), ("sdpa", dict(window=5)), ("linear", dict(pack=False))])
    m = make_model("eager")
    eager = get_attention("eager")
    m.blocks[1].attn.kernel = lambda *a, **kw: eager(*a, **kw)  # a kernel of unknown family: the gathered path
    assert not m.shares_history()
    batch = make_batch()
    with torch.no_grad():
        custom = exhaustive_scores(m.make_step_fn(batch), m.sid_codes[1:], batch_size=3)
        torch.testing.assert_close(custom, exhaustive_scores(make_model("eager").make_step_fn(batch), m.sid_codes[1:],
                                                             batch_size=3), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attention,kw", [("sdpa", {}), ("hstu", {}), ("linear", dict(pack=False))],
                         ids=["sdpa", "hstu", "linear"])
def test_the_shared_history_cache_under_bf16_autocast_matches_the_gathered_one(attention, kw):
    """Evaluation runs under the training precision: the shared path sees bf16 scores as the kernels do."""
    from genrec.generation import exhaustive_scores

    m = make_model(attention, **kw)
    batch = make_batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        shared = exhaustive_scores(m.make_step_fn(batch), m.sid_codes[1:], batch_size=3)
        gathered = exhaustive_scores(m.make_step_fn(batch, share_history=False), m.sid_codes[1:], batch_size=3)
    assert shared.dtype == gathered.dtype == torch.float32 and torch.isfinite(shared).all()
    torch.testing.assert_close(shared, gathered, rtol=0, atol=5e-3)  # bf16 rounding of the scores, summed


@pytest.mark.parametrize("kind", ["softmax", "hstu", "linear"])
def test_history_beam_cache_under_bf16_is_the_float32_kernel_rounded_once(kind):
    """A bf16 cache under bf16 autocast: bf16 outputs within one bf16 rounding of the float32 kernel on the
    gathered keys (scores and weights are not rounded on the way, as in sdpa / flash / flex)."""
    from genrec.attention import get_attention
    from genrec.models.decoder import HistoryBeamCache

    g = torch.Generator().manual_seed(0)
    k, v = (3 * torch.randn(2, 2, 64, 16, generator=g) for _ in range(2))  # 2 users, 2 heads, 64 history keys
    q1, k1, v1 = (3 * torch.randn(6, 2, 1, 16, generator=g) for _ in range(3))  # 3 beams per user, one new token
    k, v, q1, k1, v1 = (x.bfloat16() for x in (k, v, q1, k1, v1))
    pad = torch.zeros(2, 64, dtype=torch.bool)
    pad[0, :5] = True
    window = 0 if kind == "linear" else 40
    user = torch.arange(6) // 3
    kernel = get_attention({"softmax": "eager", "hstu": "hstu", "linear": "linear"}[kind])
    ref = kernel(q1.float(), torch.cat([k[user], k1], 2).float(), torch.cat([v[user], v1], 2).float(), causal=True,
                 window=window, key_padding_mask=torch.cat([pad[user], torch.zeros(6, 1, dtype=torch.bool)], 1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = HistoryBeamCache(k, v, pad, kind, window).attend(q1, k1, v1)
    assert out.dtype == torch.bfloat16 and out.shape == (6, 2, 1, 16)
    torch.testing.assert_close(out.float(), ref, rtol=2**-8, atol=1e-3)  # bf16 scores inside fail it


def test_history_beam_cache_bad_kind_or_window():
    from genrec.models.decoder import HistoryBeamCache

    k = torch.zeros(1, 1, 3, 2)
    with pytest.raises(ValueError, match="kind='gelu'"):
        HistoryBeamCache(k, k, None, kind="gelu")
    with pytest.raises(ValueError, match="window=4"):
        HistoryBeamCache(k, k, None, kind="linear", window=4)


def test_recommend_with_few_beams_gives_valid_items():
    m = make_model()
    items, scores = m.recommend(make_batch(), k=3)
    assert ((items >= 1) & (items <= 15)).all() and torch.isfinite(scores).all()


@torch.no_grad()
def test_softmax_kernels_agree_on_the_same_weights():
    batch = make_batch()
    ref = make_model("eager").target_log_probs(batch)
    for name in ("sdpa", "flex"):
        m = make_model("eager")
        from genrec.attention import get_attention

        for blk in m.blocks:
            blk.attn.kernel = get_attention(name)
        torch.testing.assert_close(m.target_log_probs(batch), ref, rtol=1e-5, atol=1e-5)


def test_from_config_and_bad_values():
    from genrec.config import load_config
    from genrec.models import ModelContext, build_model

    cfg = load_config([], ["model.kind=decoder", "model.attention=eager", "model.decoder.dim=16",
                           "model.decoder.heads=2", "model.decoder.layers=1"])
    ctx = ModelContext(num_items=15, num_users=20, sid_codes=tiny_codes(), codebook_sizes=K)
    assert isinstance(build_model(cfg, ctx), DecoderRecommender)
    with pytest.raises(ValueError, match="model.attention='flesh'"):
        make_model("flesh")
    with pytest.raises(ValueError, match="model.decoder.loss_on='every'"):
        make_model(loss_on="every")
    with pytest.raises(ValueError, match="model.decoder.dim=16 must be divisible by model.decoder.heads=3"):
        make_model(heads=3)
    with pytest.raises(ValueError, match="model.decoder.pack=false"):
        make_model("linear")
    with pytest.raises(ValueError, match="model.decoder.prefix_embedding=true"):
        make_model(prefix_output=True)
    with pytest.raises(ValueError, match="model.decoder.prefix_buckets=8: expected 0"):
        make_model(prefix_buckets=8)
    with pytest.raises(ValueError, match="model.decoder.prefix_buckets=-1: expected 0"):
        make_model(prefix_embedding=True, prefix_buckets=-1)
    with pytest.raises(ValueError, match="sids build"):
        DecoderRecommender(DecoderConfig(), "sdpa", None, [], max_history=4)


@pytest.mark.parametrize("prefix", [{}, dict(prefix_embedding=True), dict(prefix_embedding=True, prefix_output=True)],
                         ids=["codes", "prefix-embedding", "prefix-output"])
@pytest.mark.parametrize("loss_on", ["target", "all"])
@pytest.mark.parametrize("attention", ["sdpa", "hstu"])
def test_packed_batches_give_the_padded_loss(loss_on, attention, prefix):
    m = make_model(attention, loss_on=loss_on, **prefix)
    b = {**make_batch(), "history": torch.tensor([[0, 0, 0, 7], [1, 2, 3, 4], [0, 0, 0, 9]])}
    examples = [{"user": int(b["user"][i]), "history": b["history"][i], "target": int(b["target"][i])} for i in range(3)]
    packed = m.collate(examples)
    assert packed["tokens"].shape[0] == 2  # rows 0 and 2 (8 tokens each) share one row of 17
    assert set(packed["doc_ids"].unique().tolist()) <= {-1, 0, 1, 2}
    torch.testing.assert_close(m(packed).loss, m(b).loss, rtol=1e-5, atol=1e-5)
    m.dcfg.pack = False
    assert set(m.collate(examples)) == {"user", "history", "target"}
