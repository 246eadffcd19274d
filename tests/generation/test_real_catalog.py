"""The trie and the search on a real catalog: Amazon 2014 Beauty's 12,101 items, zero invalid IDs.

Codes come from the items' own metadata (category path, brand, title, each hashed into 256 codes, plus the
collision digit), so prefixes are shared the way real semantic IDs share them: a few large categories, many
items without a brand, long collision groups.
"""
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from genrec.generation import SidTrie, constrained_beam_search

DATA = Path(os.environ.get("GENREC_DATA_ROOT", "/work/shared/data")) / "amazon2014" / "beauty" / "items.jsonl"


def stable_hash(text: str, k: int = 256) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") % k


@pytest.fixture(scope="module")
def beauty_codes():
    if not DATA.exists():
        pytest.skip(f"real data not found at {DATA} (set GENREC_DATA_ROOT)")
    rows = []
    for line in DATA.read_text().splitlines():
        item = json.loads(line)
        cats = item.get("categories") or [[]]
        rows.append([stable_hash("/".join(cats[0][:3])), stable_hash(str(item.get("brand"))),
                     stable_hash(str(item.get("title")))])
    head = torch.tensor(rows)
    _, inverse = torch.unique(head, dim=0, return_inverse=True)
    order = torch.argsort(inverse, stable=True)
    first = torch.searchsorted(inverse[order], inverse[order])
    digit = torch.empty_like(inverse)
    digit[order] = torch.arange(len(order)) - first
    codes = torch.cat([head, digit[:, None]], dim=1)
    return codes, [256, 256, 256, int(digit.max()) + 1]


def test_real_catalog_trie_matches_brute_force_on_sampled_prefixes(beauty_codes):
    codes, sizes = beauty_codes
    trie = SidTrie.from_codes(codes, sizes)
    assert trie.num_nodes[0] == 1 and trie.num_items == 12101
    g = torch.Generator().manual_seed(0)
    for level in range(1, len(sizes)):
        # half real prefixes, half random ones (mostly absent)
        real = codes[torch.randint(0, len(codes), (50,), generator=g), :level]
        rand = torch.stack([torch.randint(0, sizes[j], (50,), generator=g) for j in range(level)], dim=1)
        prefixes = torch.cat([real, rand])
        got = trie.allowed(prefixes)
        match = (codes[None, :, :level] == prefixes[:, None, :]).all(-1)  # (P, N)
        want = torch.zeros(len(prefixes), sizes[level], dtype=torch.bool)
        for p in range(len(prefixes)):
            want[p, codes[match[p], level]] = True
        assert torch.equal(got, want)


def test_real_catalog_search_returns_only_valid_distinct_items(beauty_codes):
    codes, sizes = beauty_codes
    trie = SidTrie.from_codes(codes, sizes)
    b, w = 32, 20
    g = torch.Generator().manual_seed(1)
    user_logits = [torch.randn(b, k, generator=g) * 3 for k in sizes]

    def step_fn(level, prefix, parent):
        rows = prefix.shape[0]
        logits = user_logits[level].repeat_interleave(rows // b, dim=0)
        if level:  # depend on the prefix too
            logits = logits + torch.sin(prefix.sum(1, keepdim=True).float() * torch.arange(sizes[level]))
        return torch.log_softmax(logits, dim=-1)

    out = constrained_beam_search(step_fn, trie, batch_size=b, beam_size=w)
    assert (out.items > 0).all(), "12k items always fill 20 beams"
    assert torch.equal(codes[out.items - 1], out.codes), "every returned code is the item's own code"
    assert torch.equal(trie.lookup(out.codes.view(-1, len(sizes))).view(b, w), out.items)
    assert all(len(set(r.tolist())) == w for r in out.items)
    assert torch.isfinite(out.scores).all() and (out.scores[:, :-1] >= out.scores[:, 1:]).all()
