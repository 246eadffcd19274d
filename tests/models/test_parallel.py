"""ParallelSidModel: exact scoring == brute force, per-level loss by hand, beam top-K == exact when wide, kernels."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from genrec.config import ParallelConfig, load_config
from genrec.models import build_model
from genrec.models.base import ModelContext
from genrec.models.parallel import ParallelSidModel

K = [4, 3, 5]  # a tiny catalog: 60 possible paths


def tiny_codes(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    paths = list(itertools.product(*(range(k) for k in K)))
    pick = torch.randperm(len(paths), generator=g)[:n]
    return torch.cat([torch.zeros(1, len(K), dtype=torch.long), torch.tensor([paths[i] for i in pick])])


def make_model(attention="sdpa", n=20, **kw):
    torch.manual_seed(0)
    opts = dict(dim=16, layers=2, heads=2, dropout=0.0, input_dropout=0.0, mlp_ratio=2.0)
    opts.update(kw)
    m = ParallelSidModel(ParallelConfig(**opts), attention, tiny_codes(n), K, max_history=4, beam_size=5)
    torch.nn.init.normal_(m.heads.weight, std=0.3)  # leave the zero init so that the heads differ from the identity
    return m.eval()


def make_batch():
    history = torch.tensor([[0, 0, 3, 7], [1, 2, 3, 4], [0, 0, 0, 9]])  # left-padded, different lengths
    return {"user": torch.tensor([11, 4, 7]), "history": history, "target": torch.tensor([5, 6, 15])}


def brute_log_prob(m, history_row, user, item):
    """log p(item | history) computed alone: one unpadded row, per-level log-softmax, summed over levels."""
    items = history_row[history_row > 0][None]
    h, _ = m.hidden(items, torch.tensor([user]))
    logits = m.level_logits(h[:, -1])  # (L, 1, max K)
    codes = m.vocab.codes[item]
    return sum(F.log_softmax(logits[l, 0, :k], -1)[codes[l]].item() for l, k in enumerate(K))


@pytest.mark.parametrize("head", ["dot", "cosine"])
@pytest.mark.parametrize("num_user_tokens", [0, 7])
def test_exact_scores_equal_brute_force_log_probs(head, num_user_tokens):
    m = make_model(head=head, num_user_tokens=num_user_tokens)
    batch = make_batch()
    scores = m.score(batch)
    assert scores.shape == (3, 21) and torch.isinf(scores[:, 0]).all()
    for b in range(3):
        for item in range(1, 21):
            want = brute_log_prob(m, batch["history"][b], int(batch["user"][b]), item)
            assert scores[b, item].item() == pytest.approx(want, abs=1e-4)
    # the scores are a distribution over the code paths: items are a subset, so their mass is below 1
    assert (scores[:, 1:].exp().sum(1) < 1 + 1e-5).all()


def test_chunked_scoring_equals_one_chunk():
    m = make_model()
    batch = make_batch()
    full = m.score(batch)
    m.pcfg.score_chunk = 3
    assert torch.equal(m.score(batch), full)


INPUT = torch.tensor([[0, 0, 3, 7], [1, 2, 3, 4]])
LABELS = torch.tensor([[0, 0, 7, 9], [2, 3, 4, 5]])


def labelled_positions(m):
    """(code logits (L, max K) computed from the unpadded prefix alone, next item) for every labelled position."""
    for row_in, row_lab in zip(INPUT, LABELS):
        for t in range(INPUT.shape[1]):
            if row_lab[t] > 0:
                prefix = row_in[: t + 1]
                h, _ = m.hidden(prefix[prefix > 0][None])
                yield m.level_logits(h[:, -1])[:, 0].detach(), int(row_lab[t])


def test_per_level_loss_equals_hand_computation():
    m = make_model()
    loss = m({"user": torch.tensor([1, 2]), "input": INPUT, "labels": LABELS}).loss
    total, count = [0.0] * len(K), 0
    for logits, item in labelled_positions(m):
        codes = m.vocab.codes[item]
        for l, k in enumerate(K):
            total[l] += -F.log_softmax(logits[l, :k], -1)[codes[l]].item()
        count += 1
    want = sum(t / count for t in total) / len(K)
    assert loss.item() == pytest.approx(want, abs=1e-5)
    loss.backward()
    assert m.code_emb.weight.grad.abs().sum() > 0


def test_left_padding_does_not_change_a_users_scores():
    m = make_model()
    a = m.score({"user": torch.tensor([1]), "history": torch.tensor([[3, 7]])})
    b = m.score({"user": torch.tensor([1]), "history": torch.tensor([[0, 0, 0, 3, 7]])})
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("n", [20, 60])
def test_beam_top_k_equals_exact_top_k_when_the_beam_covers_the_catalog(n):
    m = make_model(n=n, topk="beam")
    batch = make_batch()
    items, scores = m.recommend(batch, k=10, beam_size=n)
    exact = m.score(batch)
    top = exact.topk(10, dim=1)
    assert torch.equal(items, top.indices)
    assert torch.allclose(scores, top.values, atol=1e-5)
    assert m.ranking == "list" and make_model().ranking == "score"


def test_narrow_beam_returns_valid_distinct_items():
    m = make_model(topk="beam")
    items, _ = m.recommend(make_batch(), k=5, beam_size=5)
    assert ((items >= 1) & (items <= 20)).all()
    assert all(len(set(r.tolist())) == 5 for r in items)


@pytest.mark.parametrize("attention", ["eager", "sdpa", "flex", "linear", "hstu"])
def test_every_attention_kernel_trains_and_scores(attention):
    if attention == "flex":
        pytest.importorskip("torch.nn.attention.flex_attention")
    m = make_model(attention).train()
    inp = torch.tensor([[0, 0, 3, 7], [1, 2, 3, 4]])
    backward = attention != "flex"  # FlexAttention has no CPU backward (genrec/attention/flex.py says so)
    with torch.set_grad_enabled(backward):
        out = m({"user": torch.tensor([1, 2]), "input": inp, "labels": torch.tensor([[0, 0, 7, 9], [2, 3, 4, 5]])})
    assert torch.isfinite(out.loss)
    if backward:
        out.loss.backward()
    m.eval()
    s = m.score(make_batch())
    assert torch.isfinite(s[:, 1:]).all()


def test_kernels_agree_with_eager_on_the_same_weights():
    ref = make_model("eager").score(make_batch())
    for name in ("sdpa", "flex"):
        assert torch.allclose(make_model(name).score(make_batch()), ref, atol=1e-4), name


@pytest.mark.parametrize("pooling", ["mean", "sum", "attention"])
@pytest.mark.parametrize("item_embedding", [False, True])
def test_pooling_and_hybrid_inputs(pooling, item_embedding):
    m = make_model(pooling=pooling, item_embedding=item_embedding)
    x = m.item_inputs(torch.tensor([[3, 0]]))
    e = m.code_emb(m.vocab.item_tokens(torch.tensor([3])))[0]  # (L, D)
    want = {"mean": e.mean(0), "sum": e.sum(0)}.get(pooling)
    if want is not None:
        if item_embedding:
            want = want + m.item_emb.weight[3]
        assert torch.allclose(x[0, 0], want, atol=1e-6)
    assert x.shape == (1, 2, 16)


def test_bad_values_name_the_field():
    for key, value in [("pooling", "max"), ("head", "mlp"), ("topk", "approx"), ("positions", "alibi")]:
        with pytest.raises(ValueError, match=f"model.parallel.{key}"):
            make_model(**{key: value})
    with pytest.raises(ValueError, match="temperature"):
        make_model(head="cosine", temperature=0.0)
    with pytest.raises(ValueError, match="semantic IDs"):
        ParallelSidModel(ParallelConfig(), "sdpa", None, [], max_history=4)


def test_from_config_builds_through_the_registry():
    cfg = load_config([], ["model.kind=parallel", "model.parallel.dim=16", "model.parallel.heads=2",
                           "model.parallel.positions=rope"])
    m = build_model(cfg, ModelContext(num_items=20, num_users=5, sid_codes=tiny_codes(), codebook_sizes=K))
    assert isinstance(m, ParallelSidModel) and m.pos is None
    assert math.isfinite(m.eval().score(make_batch())[:, 1:].sum().item())


def test_item_loss_is_the_full_catalog_softmax_of_summed_code_logits():
    m = make_model(loss="item", head="dot")
    loss = m({"user": torch.tensor([1, 2]), "input": INPUT, "labels": LABELS}).loss
    total, count = 0.0, 0
    for z, item in labelled_positions(m):
        items = torch.tensor([sum(z[l, m.vocab.codes[i, l]] for l in range(len(K))) for i in range(1, 21)])
        total += -F.log_softmax(items, -1)[item - 1].item()
        count += 1
    assert loss.item() == pytest.approx(total / count, abs=1e-5)
    loss.backward()
    # ranking by the summed per-level log-probs (score) orders items as the summed logits do
    batch = make_batch()
    h = m._last(batch)
    joint = m.item_logits(m.level_logits(h))
    assert torch.equal(m.score(batch)[:, 1:].argsort(dim=1, descending=True), joint.argsort(dim=1, descending=True))


@pytest.mark.slow
def test_parallel_run_killed_mid_training_resumes_to_the_uninterrupted_result(tmp_path, kill_at_validation):
    from genrec.training import loop

    def cfg(root):
        return load_config(["configs/tiny.yaml", "configs/tiny/parallel.yaml"], [
            f"output_dir={root}/runs", f"results_dir={root}/results", "train.progress=false", "train.epochs=4",
            "train.eval_every=1", "name=p", f"tokenizer.out_dir={tmp_path}/sids"])

    reference = loop.train(cfg(tmp_path / "a"))
    kill_at_validation(2)
    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg(tmp_path / "b"))
    kill_at_validation.disarm()
    resumed = loop.train(cfg(tmp_path / "b"))
    assert resumed["metrics"] == pytest.approx(reference["metrics"])
    assert resumed["validation_history"] == pytest.approx(reference["validation_history"])
