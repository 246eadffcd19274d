"""SidVocab: one token layout, user hashing, trie cache and exact item scores for every generative model."""
import pytest
import torch

from genrec.generation import SidTrie
from genrec.models.vocab import SidVocab, hash_user

CODES = torch.tensor([[0, 0, 0], [1, 2, 0], [3, 0, 1], [1, 2, 1]])  # (N + 1, L): row 0 padding, 3 items
SIZES = [4, 3, 2]


def test_token_layout_by_hand():
    v = SidVocab(CODES, SIZES, num_special=2, num_user_tokens=5)
    assert v.offsets_list == [7, 11, 14] and v.size == 16 and v.num_items == 3
    assert v.level_slice(1) == slice(11, 14)
    assert torch.equal(v.item_tokens(torch.tensor([[0, 2]])), torch.tensor([[[0, 0, 0], [10, 11, 15]]]))
    assert torch.equal(v.item_tokens(torch.tensor([0]), pad=-1), torch.tensor([[-1, -1, -1]]))
    u = torch.tensor([3, 40, 3])
    assert torch.equal(v.user_tokens(u), 2 + hash_user(u, 5)) and v.user_tokens(u)[0] == v.user_tokens(u)[2]
    assert not list(v.state_dict())  # the codes come from the artifact, never from a checkpoint


def test_trie_is_built_once_per_device_and_matches_the_codes():
    v = SidVocab(CODES, SIZES)
    t = v.trie()
    assert t is v.trie()
    assert torch.equal(t.lookup(CODES[1:]), torch.tensor([1, 2, 3]))  # item ids
    assert isinstance(t, SidTrie)


def test_a_built_trie_follows_the_module_to_its_device():
    """``model.to(device)`` moves the trie with the codes, so no forward has to build or copy it (the meta device
    stands in for a GPU: a trie built there from meta codes would fail on its validity check)."""
    v = SidVocab(CODES, SIZES)
    v.trie()
    v.to("meta")
    assert v.codes.device.type == "meta" and v._trie.device.type == "meta" and v.trie() is v._trie


def test_item_scores_sum_the_level_log_probs_exactly():
    v = SidVocab(CODES, SIZES)
    g = torch.Generator().manual_seed(0)
    logp = [torch.randn(2, k, generator=g).log_softmax(-1) for k in SIZES]
    s = v.item_scores(logp, chunk=2)
    assert torch.isinf(s[:, 0]).all()
    for b in range(2):
        for i in range(1, 4):
            want = sum(logp[l][b, CODES[i, l]] for l in range(3))
            assert s[b, i].item() == pytest.approx(want.item(), abs=1e-6)


def test_prefix_ids_by_hand():
    """Prefixes (1, 2) and (3, 0) are ids 1 and 2 (trie node order), the three full IDs 3, 4, 5; level 0 gets 0."""
    v = SidVocab(CODES, SIZES)
    assert v.num_prefixes == 5
    assert torch.equal(v.prefix_ids(torch.arange(4)), torch.tensor([[0, 0, 0], [0, 1, 3], [0, 2, 4], [0, 1, 5]]))
    assert torch.equal(v.prefix_ids(torch.tensor([[2, 0]]), on_cpu=True), torch.tensor([[[0, 2, 4], [0, 0, 0]]]))
    for m in range(len(SIZES) + 1):  # decoding reads the same ids from the generated codes
        want = v.prefix_ids(torch.arange(1, 4))[:, m - 1] if m else torch.zeros(3, dtype=torch.long)
        assert torch.equal(v.prefix_of(CODES[1:, :m]), want)
    assert v.prefix_of(torch.tensor([[0, 0], [1, 1]])).tolist() == [0, 0]  # prefixes of no item
    assert v.prefix_of(torch.tensor([[1, 2, 0], [1, 0, 0]])).tolist() == [3, 0]  # not in the trie: 0
    assert v.prefix_block(2) == slice(1, 3) and v.prefix_block(3) == slice(3, 6)
    kids = v.child_prefix_ids(torch.tensor([[1], [3], [0]]))  # level-1 codes completing (1, 2) and (3, 0); none
    assert kids.tolist() == [[0, 0, 1], [2, 0, 0], [0, 0, 0]]
    assert v.child_prefix_ids(torch.tensor([[1, 2], [3, 0], [3, 1]])).tolist() == [[3, 5], [0, 4], [0, 0]]
    with pytest.raises(ValueError, match="prefixes of 1 .. 2 codes, got 3"):
        v.child_prefix_ids(CODES[1:])
    one = SidVocab(torch.tensor([[0], [2], [0]]), [3])  # one level: a code is its own prefix, nothing to add
    assert one.num_prefixes == 0 and not one.prefix_ids(torch.arange(3)).any()


def test_bad_codes_are_refused_with_the_owner_named():
    with pytest.raises(ValueError, match="model.kind='x' needs semantic IDs"):
        SidVocab(None, [], owner="model.kind='x'")
    with pytest.raises(ValueError, match="codebook_sizes"):
        SidVocab(CODES, SIZES[:2])
    with pytest.raises(ValueError, match="outside"):
        SidVocab(CODES, [2, 2, 2])
    with pytest.raises(ValueError, match="num_user_tokens"):
        SidVocab(CODES, SIZES, num_user_tokens=-1)
