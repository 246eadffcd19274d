"""SidTrie against brute-force prefix matching over the code table."""
import pytest
import torch

from genrec.generation import SidTrie


def brute_allowed(codes, prefix, k):
    """(K,) bool: codes that follow `prefix` in some row of the table."""
    level = len(prefix)
    out = torch.zeros(k, dtype=torch.bool)
    for row in codes.tolist():
        if row[:level] == list(prefix):
            out[row[level]] = True
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_dense", [1 << 26, 0])  # dense tables and the sorted-CSR fallback
def test_trie_allowed_matches_brute_force(seed, max_dense, random_codes):
    sizes = [3, 4, 2, 6]
    codes = random_codes(30, sizes, seed)
    trie = SidTrie.from_codes(codes, sizes, max_dense_entries=max_dense)
    assert trie.is_dense(0) == (max_dense > 0)
    for level, k in enumerate(sizes):
        # every prefix in the full product space, valid or not
        grids = torch.meshgrid(*[torch.arange(s) for s in sizes[:level]], indexing="ij") if level else []
        prefixes = torch.stack([g.flatten() for g in grids], dim=1) if level else torch.zeros(1, 0, dtype=torch.long)
        got = trie.allowed(prefixes)
        want = torch.stack([brute_allowed(codes, p, k) for p in prefixes.tolist()])
        assert torch.equal(got, want), f"level {level}"
    # full codes map back to their item ids; an absent code maps to 0
    assert torch.equal(trie.lookup(codes), torch.arange(1, 31))
    absent = torch.tensor([[2, 3, 1, 5]])
    in_table = (codes == absent).all(dim=1).any()
    assert int(trie.lookup(absent)[0]) == (0 if not in_table else int((codes == absent).all(1).nonzero()[0]) + 1)


def test_trie_node_counts_and_device_copy():
    codes = torch.tensor([[0, 0, 0], [0, 1, 0], [1, 1, 0], [1, 1, 1]])
    trie = SidTrie.from_codes(codes, [2, 2, 2])
    assert trie.num_nodes == [1, 2, 3]
    assert trie.to("cpu").children(2, torch.tensor([2])).tolist() == [[3, 4]]
    assert trie.walk(torch.tensor([[1, 0], [0, 1]])).tolist() == [-1, 1]


def test_trie_walk_rejects_out_of_range_codes():
    codes = torch.tensor([[0, 1], [1, 0]])
    trie = SidTrie.from_codes(codes, [2, 2])
    assert trie.walk(torch.tensor([[5, 0], [-1, 0], [1, 0]])).tolist() == [-1, -1, 2]


def test_trie_errors_name_the_problem():
    with pytest.raises(ValueError, match="share the code"):
        SidTrie.from_codes(torch.tensor([[0, 1], [0, 1]]), [2, 2])
    with pytest.raises(ValueError, match="outside codebook_sizes"):
        SidTrie.from_codes(torch.tensor([[0, 2]]), [2, 2])
    with pytest.raises(ValueError, match="one size per level"):
        SidTrie.from_codes(torch.tensor([[0, 1]]), [2])
