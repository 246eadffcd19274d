"""constrained_beam_search against exhaustive enumeration through the same step function."""
import pytest
import torch

from genrec.generation import SidTrie, constrained_beam_search, exhaustive_scores

SIZES = [4, 3, 3, 5]


class ToyModel:
    """Deterministic log-probs as a function of (user, prefix): a stand-in for a decoder with a KV cache.

    logits_l = U_l[user] + sum_j E_lj[prefix_j]. The 'KV cache' is the prefix itself, kept in the previous call's
    row order; each call reorders it with ``parent``, appends the last code and asserts it equals ``prefix``, so a
    wrong ``parent`` fails loudly.
    """

    def __init__(self, num_users, sizes, seed=0, check_cache=True):
        g = torch.Generator().manual_seed(seed)
        self.sizes = sizes
        self.u = [torch.randn(num_users, k, generator=g) for k in sizes]
        self.e = [[torch.randn(sizes[j], k, generator=g) for j in range(level)] for level, k in enumerate(sizes)]
        self.users = None  # (R,) user of each row, set per search
        self.cache = None
        self.check_cache = check_cache
        self.calls = 0

    def start(self, users, rows_per_user):
        self.users = torch.as_tensor(users).repeat_interleave(rows_per_user)
        self.cache = None

    def __call__(self, level, prefix, parent):
        self.calls += 1
        rows = prefix.shape[0]
        assert prefix.shape == (rows, level) and parent.shape == (rows,)
        if level == 0:
            assert torch.equal(parent, torch.arange(rows))
            self.cache = torch.zeros(rows, 0, dtype=torch.long)
        else:
            self.cache = torch.cat([self.cache.index_select(0, parent), prefix[:, -1:]], dim=1)
            if self.check_cache:
                assert torch.equal(self.cache, prefix), "parent reordering broke the cache"
        logits = self.u[level][self.users].clone()
        for j in range(level):
            logits += self.e[level][j][prefix[:, j]]
        return torch.log_softmax(logits, dim=-1)


def search(model, trie, users, beam, **kw):
    model.start(users, beam)
    return constrained_beam_search(model, trie, batch_size=len(users), beam_size=beam, device="cpu", **kw)


def enumerate_all(model, codes, users):
    model.start(users, codes.shape[0])
    return exhaustive_scores(model, codes, batch_size=len(users))  # (B, N)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("extra_beams", [0, 7])
def test_beam_covering_catalog_equals_exhaustive_enumeration(seed, extra_beams, random_codes):
    n = 25
    codes = random_codes(n, SIZES, seed)
    trie = SidTrie.from_codes(codes, SIZES)
    model = ToyModel(num_users=3, sizes=SIZES, seed=seed)
    users = [0, 2, 1]
    out = search(model, trie, users, beam=n + extra_beams)
    ref = enumerate_all(model, codes, users)
    ref_scores, ref_order = ref.sort(dim=1, descending=True)
    assert torch.equal(out.items[:, :n], ref_order + 1)
    torch.testing.assert_close(out.scores[:, :n], ref_scores, rtol=0, atol=0)
    assert torch.equal(out.codes[:, :n], codes[ref_order])
    # beams beyond the catalog are padding
    assert (out.items[:, n:] == 0).all() and torch.isneginf(out.scores[:, n:]).all()
    assert (out.codes[:, n:] == 0).all()


@pytest.mark.parametrize("beam", [1, 3, 8])
def test_small_beams_return_valid_distinct_items(beam, random_codes):
    codes = random_codes(40, SIZES, seed=3)
    trie = SidTrie.from_codes(codes, SIZES)
    model = ToyModel(num_users=5, sizes=SIZES, seed=3)
    out = search(model, trie, list(range(5)), beam=beam)
    ref = enumerate_all(model, codes, list(range(5)))
    assert out.items.shape == (5, beam)
    assert (out.items > 0).all(), "40 items always fill the beams"
    for row_items, row_codes, row_scores, row_ref in zip(out.items, out.codes, out.scores, ref):
        assert len(set(row_items.tolist())) == beam
        assert torch.equal(codes[row_items - 1], row_codes)
        # each score is that item's exact path score, and scores come best first
        torch.testing.assert_close(row_scores, row_ref[row_items - 1])
        assert (row_scores[:-1] >= row_scores[1:]).all()
    # greedy (beam 1) picks the argmax code at each step among valid ones; beam search never scores below it
    if beam == 1:
        assert (ref.max(dim=1).values >= out.scores[:, 0]).all()


def test_batch_elements_are_independent(random_codes):
    codes = random_codes(30, SIZES, seed=4)
    trie = SidTrie.from_codes(codes, SIZES)
    model = ToyModel(num_users=4, sizes=SIZES, seed=4)
    users = [3, 0, 1, 2]
    batched = search(model, trie, users, beam=6)
    for i, u in enumerate(users):
        single = search(model, trie, [u], beam=6)
        assert torch.equal(single.items[0], batched.items[i])
        torch.testing.assert_close(single.scores[0], batched.scores[i])


def test_fewer_items_than_beams_pads_with_zero_and_neg_inf():
    codes = torch.tensor([[0, 1, 0], [2, 0, 0], [2, 0, 1]])
    sizes = [3, 2, 2]
    trie = SidTrie.from_codes(codes, sizes)
    model = ToyModel(num_users=2, sizes=sizes, seed=5)
    out = search(model, trie, [0, 1], beam=5)
    assert (out.items[:, 3:] == 0).all() and torch.isneginf(out.scores[:, 3:]).all()
    assert sorted(out.items[0, :3].tolist()) == [1, 2, 3] == sorted(out.items[1, :3].tolist())
    assert torch.isfinite(out.scores[:, :3]).all()


def test_num_return_truncates_best_first(random_codes):
    codes = random_codes(20, SIZES, seed=6)
    trie = SidTrie.from_codes(codes, SIZES)
    model = ToyModel(num_users=2, sizes=SIZES, seed=6)
    full = search(model, trie, [0, 1], beam=8)
    top3 = search(model, trie, [0, 1], beam=8, num_return=3)
    assert torch.equal(top3.items, full.items[:, :3]) and top3.codes.shape == (2, 3, len(SIZES))


def test_csr_trie_gives_the_same_search(random_codes):
    codes = random_codes(30, SIZES, seed=7)
    model = ToyModel(num_users=2, sizes=SIZES, seed=7)
    dense = search(model, SidTrie.from_codes(codes, SIZES), [0, 1], beam=5)
    csr = search(model, SidTrie.from_codes(codes, SIZES, max_dense_entries=0), [0, 1], beam=5)
    assert torch.equal(dense.items, csr.items)


def test_step_fn_shape_and_argument_errors(random_codes):
    codes = random_codes(10, SIZES, seed=8)
    trie = SidTrie.from_codes(codes, SIZES)
    with pytest.raises(ValueError, match="expected"):
        constrained_beam_search(lambda lvl, p, par: torch.zeros(p.shape[0], 99), trie, 2, 3)
    with pytest.raises(ValueError, match="num_return"):
        constrained_beam_search(lambda lvl, p, par: torch.zeros(p.shape[0], 4), trie, 2, 3, num_return=4)


def test_fake_cache_catches_a_wrong_parent():
    """The cache check in ToyModel is live: feeding it a shuffled parent fails."""
    model = ToyModel(num_users=1, sizes=SIZES)
    model.start([0], 3)
    model(0, torch.zeros(3, 0, dtype=torch.long), torch.arange(3))
    model(1, torch.tensor([[0], [1], [2]]), torch.arange(3))
    with pytest.raises(AssertionError, match="parent reordering"):
        model(2, torch.tensor([[2, 0], [1, 1], [0, 2]]), torch.tensor([0, 1, 2]))
