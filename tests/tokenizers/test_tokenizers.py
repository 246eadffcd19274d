"""Properties every tokenizer must have, on synthetic clustered embeddings."""
import pytest
import torch

from genrec.config import TokenizerConfig
from genrec.tokenizers import TOKENIZERS, build_tokenizer, load_tokenizer


L, K = 3, 8
TINY_RQVAE = dict(epochs=25, batch_size=64, hidden_dims=[64, 32], latent_dim=16, kmeans_iters=10, lr=3e-3)


def make(kind):
    # opq: E must be divisible by L; here plain PQ (rotation off) after a PCA to 30 dimensions
    kw = {"rqvae": TINY_RQVAE, "opq": dict(rotation=False, pca_dim=30, whiten=False)}.get(kind, {})
    return TOKENIZERS[kind](num_levels=L, codebook_size=K, seed=0, **kw)


@pytest.fixture(scope="module")
def fitted():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(8, 32, generator=g) * 5
    labels = torch.arange(240) % 8
    x = centres[labels] + 0.1 * torch.randn(240, 32, generator=g)
    torch.set_num_threads(1)
    return x, labels, {kind: make(kind).fit(x) for kind in TOKENIZERS}


@pytest.mark.parametrize("kind", TOKENIZERS)
def test_tokenizer_codes_shape_and_range(fitted, kind):
    x, _, toks = fitted
    codes = toks[kind].encode(x)
    assert codes.shape == (len(x), L) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < K


@pytest.mark.parametrize("kind", ["rqvae", "rkmeans", "pq"])
def test_tokenizer_level1_separates_clusters(fitted, kind):
    x, labels, toks = fitted
    first = toks[kind].encode(x)[:, 0]
    for c in range(8):
        assert len(set(first[labels == c].tolist())) == 1, f"cluster {c} split at level 1"
    assert len({int(first[labels == c][0]) for c in range(8)}) == 8, "two clusters share a level-1 code"


@pytest.mark.parametrize("kind", ["rkmeans", "pq"])
def test_tokenizer_kmeans_decode_reconstructs_and_reencodes(fitted, kind):
    x, _, toks = fitted
    codes = toks[kind].encode(x)
    approx = toks[kind].decode(codes)
    rel = (approx - x).pow(2).sum(1).mean() / (x - x.mean(0)).pow(2).sum(1).mean()
    assert rel < 0.01
    assert torch.equal(toks[kind].encode(approx), codes)


def test_tokenizer_rqvae_decode_reconstructs(fitted):
    x, _, toks = fitted
    approx = toks["rqvae"].decode(toks["rqvae"].encode(x))
    rel = (approx - x).pow(2).sum(1).mean() / (x - x.mean(0)).pow(2).sum(1).mean()
    assert rel < 0.2  # the decoder recovers most of the variance (cluster structure) from the codes


def test_tokenizer_rkmeans_error_falls_with_levels(fitted):
    x, _, toks = fitted
    tok = toks["rkmeans"]
    codes = tok.encode(x)
    errs = [float((sum(tok.books[l][codes[:, l]] for l in range(n)) - x).pow(2).sum()) for n in range(1, L + 1)]
    assert errs[0] > errs[1] > errs[2]


def test_tokenizer_lsh_codes_decode_encode_identity(fitted):
    _, _, toks = fitted
    codes = torch.randint(0, K, (50, L), generator=torch.Generator().manual_seed(1))
    assert torch.equal(toks["lsh"].encode(toks["lsh"].decode(codes)), codes)


def test_tokenizer_lsh_bits_are_hyperplane_signs(fitted):
    x, _, toks = fitted
    tok = toks["lsh"]
    bits = ((x - tok.mean) @ tok.planes.T > 0).long()  # (N, L*3), K=8 -> 3 bits per level
    expect = bits[:, 0] * 4 + bits[:, 1] * 2 + bits[:, 2]
    assert torch.equal(tok.encode(x)[:, 0], expect)
    # the same cluster is near-identical, so it hashes to one code at every level
    assert torch.equal(tok.encode(x[:8]), tok.encode(x[:8] + 1e-6))


def test_tokenizer_random_is_deterministic_and_content_free(fitted):
    x, labels, toks = fitted
    tok = toks["random"]
    codes = tok.encode(x)
    assert torch.equal(codes, tok.encode(x.clone()))
    # the items of one tight cluster still get many different codes
    assert len(set(codes[labels == 0, 0].tolist())) > 3
    other = TOKENIZERS["random"](num_levels=L, codebook_size=K, seed=1).fit(x).encode(x)
    assert not torch.equal(codes, other)
    with pytest.raises(NotImplementedError):
        tok.decode(codes)


@pytest.mark.parametrize("kind", TOKENIZERS)
def test_tokenizer_save_load_identical_codes(fitted, kind, tmp_path):
    x, _, toks = fitted
    path = str(tmp_path / f"{kind}.pt")
    toks[kind].save(path)
    loaded = load_tokenizer(path)
    assert type(loaded) is type(toks[kind])
    assert torch.equal(loaded.encode(x), toks[kind].encode(x))


@pytest.mark.parametrize("kind", TOKENIZERS)
def test_tokenizer_encodes_new_items_without_refit(fitted, kind):
    x, labels, toks = fitted
    new = x[:5] + 0.01
    codes = toks[kind].encode(new)
    assert codes.shape == (5, L)
    if kind in ("rkmeans", "pq", "rqvae"):
        assert torch.equal(codes[:, 0], toks[kind].encode(x[:5])[:, 0])


def test_tokenizer_unfitted_raises():
    with pytest.raises(RuntimeError, match="not fitted"):
        TOKENIZERS["pq"]().encode(torch.zeros(2, 4))


def test_tokenizer_registry_lookup_from_config():
    tok = build_tokenizer(TokenizerConfig(kind="rkmeans", num_levels=2, codebook_size=4))
    assert tok.num_levels == 2 and tok.codebook_size == 4
    with pytest.raises(ValueError, match="rkmean.*Did you mean 'rkmeans'"):
        build_tokenizer(TokenizerConfig(kind="rkmean"))


def test_tokenizer_lsh_rejects_non_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        TOKENIZERS["lsh"](codebook_size=100)


def test_tokenizer_rqvae_dead_code_reset_revives_codes():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 32, generator=g)[torch.arange(256) % 16] + 0.3 * torch.randn(256, 32, generator=g)
    # 16 tight clusters, 32 codes: without a remedy about half of the level-1 codes stay unused
    kw = dict(num_levels=2, codebook_size=32, seed=0, epochs=3, batch_size=64, hidden_dims=[32], latent_dim=8,
              kmeans_init=False)
    without = TOKENIZERS["rqvae"](dead_code_reset=False, **kw).fit(x).encode(x)
    with_reset = TOKENIZERS["rqvae"](dead_code_reset=True, **kw).fit(x).encode(x)
    used = lambda c: len(set(c[:, 0].tolist()))  # noqa: E731
    assert used(with_reset) == 32 and used(without) < 24


def _opq_data(n=600, e=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g) @ torch.randn(8, e, generator=g) + 0.05 * torch.randn(n, e, generator=g)


def test_opq_long_ids_roundtrip_and_beat_plain_pq_on_correlated_dimensions():
    bits = 4  # 16 codes per level: fast; 8-bit codes (one byte per level) are checked below without the rotation
    x = _opq_data()
    opq = TOKENIZERS["opq"](num_levels=8, codebook_size=1 << bits, seed=0).fit(x)
    pq = TOKENIZERS["opq"](num_levels=8, codebook_size=1 << bits, seed=0, rotation=False).fit(x)
    codes = opq.encode(x)
    assert codes.shape == (600, 8) and int(codes.max()) < (1 << bits)
    err = {name: (t.decode(t.encode(x)) - x).pow(2).sum(1).mean().item() for name, t in [("opq", opq), ("pq", pq)]}
    # the learned rotation balances the sub-spaces (OPQ's point): ~0.04x plain PQ's error with a rotation trained
    # against the 16-code PQ it serves, ~0.29x with one trained against faiss's default 256-code PQ
    assert err["opq"] < 0.1 * err["pq"]
    # packing: decode(codes) is what faiss reconstructs from its own packed codes
    assert torch.allclose(opq.decode(codes), torch.from_numpy(opq.index.sa_decode(opq.index.sa_encode(x.numpy()))))
    again = TOKENIZERS["opq"](num_levels=8, codebook_size=1 << bits, seed=0).fit(x)
    assert torch.equal(again.encode(x), codes)


def test_opq_whitened_pca_and_bad_settings():
    x = _opq_data()
    t = TOKENIZERS["opq"](num_levels=4, codebook_size=16, pca_dim=8).fit(x)
    assert t.encode(x).shape == (600, 4) and t.decode(t.encode(x)).shape == (600, 8)  # decoded in the PCA space
    with pytest.raises(ValueError, match="power of two"):
        TOKENIZERS["opq"](num_levels=4, codebook_size=100)
    with pytest.raises(ValueError, match="pca_dim"):
        TOKENIZERS["opq"](num_levels=4, codebook_size=16, pca_dim=10)
    with pytest.raises(ValueError, match="multiple of tokenizer.num_levels"):
        TOKENIZERS["opq"](num_levels=5, codebook_size=16).fit(x)
    with pytest.raises(ValueError, match="too few"):
        TOKENIZERS["opq"](num_levels=4, codebook_size=16).fit(x[:10])
    # 100 items fit a 16-code OPQ: its rotation trains against that PQ, not one that needs 256 items
    assert TOKENIZERS["opq"](num_levels=4, codebook_size=16).fit(x[:100]).encode(x[:100]).shape == (100, 4)


def test_pq_by_faiss_with_byte_codes_roundtrips():
    x = _opq_data(n=300)
    t = TOKENIZERS["opq"](num_levels=4, codebook_size=256, rotation=False).fit(x)
    codes = t.encode(x)
    assert codes.shape == (300, 4) and int(codes.max()) < 256
    assert torch.allclose(t.decode(codes), torch.from_numpy(t.index.sa_decode(t.index.sa_encode(x.numpy()))))
