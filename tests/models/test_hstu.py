"""HSTU: the block equals an explicit loop of its formulas; sampled softmax with every item as a negative is the
full cross-entropy; the model trains and scores every item."""
import math

import pytest
import torch
import torch.nn.functional as F

from genrec.config import load_config
from genrec.models import build_model
from genrec.models.base import ModelContext
from genrec.models.hstu import HSTU, HSTUBlock, request_times, time_gap_buckets
from genrec.models.losses import item_loss


def block_reference(blk: HSTUBlock, x: torch.Tensor, pad: torch.Tensor, gaps=None) -> torch.Tensor:
    """One HSTU layer, position by position and head by head (``gaps``: (B, T, T) time buckets)."""
    b, t, _ = x.shape
    out = torch.zeros_like(x)
    for bi in range(b):
        h = F.silu(blk.uvqk(blk.norm_in(x[bi])))  # (T, 4 parts)
        hv, hq = blk.heads * blk.dv, blk.heads * blk.dqk
        u, v, q, k = h[:, :hv], h[:, hv:2 * hv], h[:, 2 * hv:2 * hv + hq], h[:, 2 * hv + hq:]
        for i in range(t):
            if pad[bi, i]:
                continue
            heads = []
            for hh in range(blk.heads):
                qs, ks = slice(hh * blk.dqk, (hh + 1) * blk.dqk), slice(hh * blk.dv, (hh + 1) * blk.dv)
                keys = [j for j in range(i + 1) if not pad[bi, j]]
                acc = torch.zeros(blk.dv)
                for j in keys:
                    table = blk.rel_bias[0 if len(blk.rel_bias) == 1 else hh]  # one table shared, or one per head
                    rab = table[min(max(j - i, -(blk.max_len - 1)), blk.max_len - 1) + blk.max_len - 1]
                    if gaps is not None:
                        rab = rab + blk.time_bias[0 if len(blk.time_bias) == 1 else hh][gaps[bi, i, j]]
                    acc = acc + F.silu(q[i, qs] @ k[j, qs] + rab) * v[j, ks]
                heads.append(acc / (blk.max_len if blk.reference else max(len(keys), 1)))
            attn = torch.cat(heads)
            out[bi, i] = x[bi, i] + blk.out(u[i] * blk.norm_attn(attn))
    return out


@pytest.mark.parametrize("reference,shared_bias,time_buckets", [(False, False, 0), (True, False, 0), (True, True, 0),
                                                                (False, False, 6), (True, True, 6)])
def test_hstu_block_equals_the_loop_reference(reference, shared_bias, time_buckets):
    torch.manual_seed(0)
    blk = HSTUBlock(dim=8, heads=2, dqk=3, dv=4, max_len=5, dropout=0.0, reference=reference,
                    shared_bias=shared_bias, time_buckets=time_buckets).eval()
    assert (blk.uvqk.bias is None) == reference and (blk.norm_in.weight is None) == reference
    assert blk.rel_bias.shape == (1 if shared_bias else 2, 9)
    torch.nn.init.normal_(blk.rel_bias, std=0.5)
    gaps = None
    if time_buckets:
        assert blk.time_bias.shape == (1 if shared_bias else 2, 7)
        torch.nn.init.normal_(blk.time_bias, std=0.5)
        gaps = torch.randint(0, 7, (2, 5, 5))
    x = torch.randn(2, 5, 8)
    pad = torch.tensor([[True, True, False, False, False], [False] * 5])
    with torch.no_grad():
        assert torch.allclose(blk(x, pad, gaps), block_reference(blk, x, pad, gaps), atol=1e-5)


def test_time_gap_buckets_are_hstus_log_buckets():
    """floor(ln(max(|gap|, 1)) / 0.301), clipped: 0 s and 1 s -> 0, 2 s -> 2, a minute -> 13, an hour -> 27, a day
    -> 37; beyond the last bucket -> the last; a key after the query (negative gap) by its size."""
    gaps = torch.tensor([0, 1, 2, 59, 60, 3600, 86400, 10**10, -3600])
    got = time_gap_buckets(gaps[None], torch.zeros(1, 1, dtype=torch.long), 40)[0, :, 0]
    assert got.tolist() == [0, 0, 2, 13, 13, 27, 37, 40, 27]
    got = time_gap_buckets(torch.tensor([[100, 500]]), torch.tensor([[40, 100]]), 128)
    assert got.tolist() == [[[13, 0], [20, 19]]]


def test_time_bias_reads_gaps_only():
    """States depend on times only through their differences (a shift changes nothing); the target's time reaches the
    last position only, and does reach it."""
    torch.manual_seed(0)
    m = HSTU(num_items=10, max_len=4, dim=8, layers=2, heads=2, dqk=4, dv=4, dropout=0.0, time_buckets=60).eval()
    for blk in m.blocks:
        torch.nn.init.normal_(blk.time_bias, std=1.0)
    batch = {"history": torch.tensor([[0, 4, 2, 9], [3, 1, 5, 8]]),
             "history_times": torch.tensor([[0, 10, 70, 4000], [5, 6, 7, 90000]]),
             "target_time": torch.tensor([4100, 200000])}
    shifted = {**batch, "history_times": batch["history_times"] + 10**9, "target_time": batch["target_time"] + 10**9}
    shifted["history_times"][0, 0] = 0  # the padding slot's time is never read
    with torch.no_grad():
        torch.testing.assert_close(m.score(shifted), m.score(batch))
        later = {**batch, "target_time": batch["target_time"] * 1000}
        h = m.encode(batch["history"], batch["history_times"], request_times(batch))
        h_later = m.encode(later["history"], later["history_times"], request_times(later))
    torch.testing.assert_close(h[:, :-1], h_later[:, :-1])
    assert (h[:, -1] - h_later[:, -1]).abs().amax(-1).min() > 1e-3
    with pytest.raises(ValueError, match=r"model.hstu.time_bias=true needs \['history_times', 'target_time'\]"):
        m.score({"history": batch["history"]})


def test_reference_details_make_states_independent_of_left_padding():
    """With the research code's details (positions from the oldest item, constant 1/n) a user's states do not depend
    on how much padding precedes the history; with ours (newest item at the last position) they do."""
    items = torch.tensor([[4, 2, 9]])
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), items], 1)  # the same history, 3 padding slots first
    for reference in (True, False):
        torch.manual_seed(0)
        model = HSTU(num_items=10, max_len=6, dim=8, layers=2, heads=2, dqk=4, dv=4, dropout=0.0,
                     reference=reference).eval()
        torch.nn.init.normal_(model.blocks[0].rel_bias, std=0.5)
        with torch.no_grad():
            same = torch.allclose(model.encode(padded)[:, 3:], model.encode(items), atol=1e-5)
        assert same == reference


@pytest.mark.parametrize("temperature", [1.0, 0.05])
def test_sampled_softmax_with_every_item_as_negative_is_full_cross_entropy(temperature):
    torch.manual_seed(0)
    h, table = torch.randn(2, 3, 6), torch.randn(11, 6)
    labels = torch.tensor([[0, 3, 7], [1, 10, 0]])
    full = item_loss("ce", h, labels, table, temperature)
    assert torch.allclose(item_loss("sampled", h, labels, table, temperature, num_negatives=10), full)
    mask = labels > 0
    want = F.cross_entropy(h[mask] @ table[1:].T / temperature, labels[mask] - 1)
    assert torch.allclose(full, want)
    few = item_loss("sampled", h, labels, table, temperature, num_negatives=4)
    assert torch.isfinite(few) and few < full + 1e-6 + math.log(11)  # fewer competitors: a smaller loss


@pytest.mark.parametrize("negatives", ["position", "sequence"])
def test_sampled_softmax_equals_a_hand_computation_on_its_draw(negatives):
    """Each labelled position: -log softmax over [positive, its row's (or its own) negatives minus the positive]."""
    torch.manual_seed(0)
    h, table = torch.randn(2, 3, 6), torch.randn(11, 6)
    labels = torch.tensor([[0, 3, 7], [1, 10, 0]])
    torch.manual_seed(1)
    got = item_loss("sampled", h, labels, table, 0.5, num_negatives=4, negatives=negatives)
    torch.manual_seed(1)  # the same draw, by hand
    shape = (2, 4) if negatives == "sequence" else (4, 4)
    neg = torch.randint(1, 11, shape)
    losses, p = [], 0
    for b in range(2):
        for t in range(3):
            pos = int(labels[b, t])
            if pos == 0:
                continue
            negs = [int(j) for j in (neg[b] if negatives == "sequence" else neg[p]) if int(j) != pos]
            logits = torch.stack([h[b, t] @ table[j] for j in [pos] + negs]) / 0.5
            losses.append(-torch.log_softmax(logits, 0)[0])
            p += 1
    torch.testing.assert_close(got, torch.stack(losses).mean())


def test_hstu_trains_and_scores_every_item():
    torch.manual_seed(0)
    m = HSTU(num_items=20, max_len=6, dim=8, layers=2, heads=2, dqk=3, dv=4, dropout=0.0, num_negatives=5)
    batch = {"input": torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]]),
             "labels": torch.tensor([[0, 0, 4, 5, 6, 7], [2, 3, 4, 5, 6, 7]])}
    loss = m(batch).loss
    loss.backward()
    assert torch.isfinite(loss) and m.item_emb.weight.grad.abs().sum() > 0
    m.eval()
    a = m.score({"history": torch.tensor([[0, 0, 0, 3, 4, 5]])})
    assert a.shape == (1, 21) and torch.isfinite(a).all()


def test_hstu_builds_from_config_and_sasrec_takes_the_sampled_loss():
    cfg = load_config([], ["model.kind=hstu", "data.max_history=6", "model.hstu.dim=8", "model.hstu.dqk=4",
                           "model.hstu.dv=4"])
    m = build_model(cfg, ModelContext(num_items=20, num_users=3))
    assert isinstance(m, HSTU)
    cfg = load_config([], ["model.sasrec.loss=sampled", "model.sasrec.num_negatives=8", "data.max_history=6",
                           "model.sasrec.hidden=8"])
    s = build_model(cfg, ModelContext(num_items=20, num_users=3))
    out = s({"input": torch.tensor([[0, 1, 2, 3, 4, 5]]), "labels": torch.tensor([[0, 2, 3, 4, 5, 6]])})
    assert torch.isfinite(out.loss)


def test_sasrec_l2_norm_scores_and_trains_on_cosine_over_the_temperature():
    """HSTU's SASRec row: L2-normalised state and items, logits = cosine / 0.05, in the loss and in the scores."""
    from genrec.models.sasrec import SASRec

    torch.manual_seed(0)
    m = SASRec(num_items=10, max_len=4, hidden=8, dropout=0.0, loss="ce", temperature=0.05, l2_norm=True).eval()
    hist = torch.tensor([[0, 3, 4, 5]])
    h = m.encode(hist)[:, -1]
    torch.testing.assert_close(h.norm(dim=-1), torch.ones(1))
    cos = F.cosine_similarity(h[:, None], m.item_emb.weight[None], dim=-1)
    torch.testing.assert_close(m.score({"history": hist}), cos / 0.05)
    labels = torch.tensor([[0, 4, 5, 6]])
    want = F.cross_entropy((F.normalize(m.encode(hist), dim=-1)[labels > 0] @
                            F.normalize(m.item_emb.weight[1:], dim=-1).T) / 0.05, labels[labels > 0] - 1)
    torch.testing.assert_close(m({"input": hist, "labels": labels}).loss, want)
    m.loss_fn = lambda model, hh, lab: item_loss("sampled", hh, lab, model.item_table(), model.temperature, 10)
    torch.testing.assert_close(m({"input": hist, "labels": labels}).loss, want)  # every item a negative: the same


@pytest.mark.parametrize("heads", [1, 2])
def test_sasrec_mask_padding_makes_states_independent_of_left_padding(heads):
    """mask_padding: padded keys masked and positions from the oldest item, so a history's states are those of the
    unpadded history (HSTU's right-padded SASRec); by default (the original code) the padding is attended to. Padded
    rows stay finite (they keep their own key), so gradients do too."""
    from genrec.models.sasrec import SASRec

    histories = [[4, 2, 9], [7, 1, 3, 8, 5], [6]]  # a batch with different padding: the mask's (B * heads) layout
    padded = torch.tensor([[0] * (6 - len(h)) + h for h in histories])
    for mask_padding in (False, True):  # the masked model is the one trained below
        torch.manual_seed(0)
        m = SASRec(num_items=10, max_len=6, hidden=8, heads=heads, dropout=0.0, mask_padding=mask_padding).eval()
        with torch.no_grad():
            for blk in m.blocks:  # non-zero biases: padded keys carry a value the unmasked model attends to
                torch.nn.init.normal_(blk.attn.in_proj_bias, std=0.5)
            batch = m.encode(padded)
            same = [torch.allclose(batch[b, 6 - len(h):], m.encode(torch.tensor([h]))[0], atol=1e-5)
                    for b, h in enumerate(histories)]
        assert all(same) if mask_padding else not any(same[:2])
    m.train()
    loss = m({"input": padded, "labels": torch.where(padded > 0, padded % 10 + 1, 0)}).loss
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_time_bias_step_is_one_graph_and_runs_under_bf16_autocast():
    """The time bias adds no host read (dynamo fullgraph, as ``train.compile`` needs) and keeps the bf16 training
    step finite with fp32 scores (the GPU precision, on CPU)."""
    torch.manual_seed(0)
    m = HSTU(num_items=20, max_len=5, dim=8, layers=2, heads=2, dqk=4, dv=4, dropout=0.1, loss="ce", time_buckets=40)
    batch = {"input": torch.tensor([[0, 3, 4, 5, 6], [1, 2, 3, 4, 5]]),
             "labels": torch.tensor([[0, 4, 5, 6, 7], [2, 3, 4, 5, 6]]),
             "input_times": torch.tensor([[0, 10, 50, 900, 86400], [1, 2, 3, 4, 5]]),
             "label_times": torch.tensor([[0, 50, 900, 86400, 90000], [2, 3, 4, 5, 600]])}
    torch._dynamo.reset()
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    compiled(batch).loss.backward()
    assert all(blk.time_bias.grad.abs().sum() > 0 for blk in m.blocks)
    m.eval()
    torch.testing.assert_close(compiled(batch).loss, m(batch).loss)
    torch._dynamo.reset()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(m(batch).loss)
        scores = m.score({"history": batch["input"], "history_times": batch["input_times"],
                          "target_time": torch.tensor([90000, 600])})
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
