"""Collaborative embeddings: co-occurrence counts by hand, PPMI-SVD neighbours, no held-out item is read."""
import numpy as np
import pytest
import torch

from genrec.config import EmbeddingConfig
from genrec.data.interactions import InteractionData
from genrec.embeddings import item_embeddings
from genrec.embeddings.collab import cooccurrence, ppmi_svd_embeddings


def test_cooccurrence_counts_by_hand():
    m = cooccurrence([np.array([1, 2, 3]), np.array([2, 1])], num_items=4, window=2).toarray()
    want = np.zeros((4, 4))
    for a, b, w in [(0, 1, 1.0), (1, 2, 1.0), (0, 2, 0.5), (1, 0, 1.0)]:  # pairs (0-based) and 1 / distance
        want[a, b] += w
        want[b, a] += w
    assert np.allclose(m, want)


def test_items_bought_together_are_neighbours():
    rng = np.random.default_rng(0)
    # two "shops": items 1..10 co-occur with each other, items 11..20 with each other
    seqs = [rng.choice(np.arange(1, 11) + 10 * (u % 2), size=6, replace=False) for u in range(200)]
    emb = ppmi_svd_embeddings(seqs, num_items=20, dim=4, window=3)
    assert emb.shape == (20, 4) and torch.allclose(emb.norm(dim=1), torch.ones(20), atol=1e-5)
    sim = emb @ emb.T
    same = sim[:10, :10].mean() + sim[10:, 10:].mean()
    cross = sim[:10, 10:].mean() * 2
    assert same > cross + 0.5
    assert torch.equal(emb, ppmi_svd_embeddings(seqs, num_items=20, dim=4, window=3))  # deterministic


def test_collab_source_reads_only_training_items():
    seqs = [np.array([1, 2, 3, 9, 10]), np.array([2, 3, 1, 4, 9]), np.array([3, 1, 2, 5, 6]),
            np.array([1, 3, 2, 7, 8])]
    data = InteractionData("toy", seqs, np.arange(4), [{"title": str(i)} for i in range(1, 11)])
    emb = item_embeddings(EmbeddingConfig(source="collab", collab_dim=2, collab_window=2), data.items, "toy",
                          data=data)
    # items 5..10 appear only as validation / test items (the last two of each sequence): zero rows
    assert emb[4:].abs().sum() == 0 and (emb[:3].norm(dim=1) > 0.99).all()


def test_collab_errors_name_the_field():
    with pytest.raises(ValueError, match="collab_dim"):
        ppmi_svd_embeddings([np.array([1, 2])], num_items=3, dim=3)
    with pytest.raises(ValueError, match="collab_window"):
        ppmi_svd_embeddings([np.array([1, 2])], num_items=3, dim=1, window=0)
    with pytest.raises(ValueError, match="interactions"):
        item_embeddings(EmbeddingConfig(source="collab"), [{}] * 3, "toy")


def test_embedding_cache_key_follows_the_encoder_weights(tmp_path):
    from genrec.embeddings.text_encoder import cache_path

    enc = tmp_path / "enc"
    enc.mkdir()
    (enc / "model.safetensors").write_bytes(b"weights v1")
    cfg = EmbeddingConfig(encoder=str(enc), cache_dir=str(tmp_path / "cache"))
    items = [{"title": "a"}, {"title": "b"}]
    before, _ = cache_path(cfg, items, "toy")
    (enc / "model.safetensors").write_bytes(b"weights v2")  # same name, other weights
    after, _ = cache_path(cfg, items, "toy")
    assert before != after


def _missing(*args, **kwargs):
    raise ImportError("embedding.encoder='minilm' needs the offline MiniLM weights")


def _encoder_installed(tmp_path, monkeypatch):
    """An encoder folder with weights v1 that "embeds" item i as (2i, 2i + 1); returns (module, folder, cfg, items)."""
    from genrec.embeddings import text_encoder as te

    enc = tmp_path / "enc"
    enc.mkdir()
    (enc / "model.safetensors").write_bytes(b"weights v1")
    monkeypatch.setattr(te, "resolve_encoder", lambda name: str(enc))
    monkeypatch.setattr(te, "encode_texts", lambda texts, *a, **kw: torch.arange(len(texts) * 2.0).view(-1, 2))
    return te, enc, EmbeddingConfig(encoder="minilm", cache_dir=str(tmp_path / "cache")), [{"title": "a"},
                                                                                           {"title": "b"}]


def test_cached_embeddings_serve_a_machine_without_the_encoder_weights(tmp_path, monkeypatch):
    """Embed where the weights are, copy the cache to a node without them: the same embeddings, not an error."""
    te, enc, cfg, items = _encoder_installed(tmp_path, monkeypatch)
    emb = te.text_embeddings(cfg, items, "toy")
    monkeypatch.setattr(te, "resolve_encoder", _missing)
    monkeypatch.setattr(te, "encode_texts", _missing)
    assert torch.equal(te.text_embeddings(cfg, items, "toy"), emb)
    with pytest.raises(ImportError, match="MiniLM weights"):  # other texts: nothing cached to use
        te.text_embeddings(cfg, [{"title": "a"}, {"title": "c"}], "toy")
    # a second cache of the same items made with other weights: ambiguous, say so
    monkeypatch.setattr(te, "resolve_encoder", lambda name: str(enc))
    (enc / "model.safetensors").write_bytes(b"weights v2")
    monkeypatch.setattr(te, "encode_texts", lambda texts, *a, **kw: torch.ones(len(texts), 2))
    te.text_embeddings(cfg, items, "toy")
    monkeypatch.setattr(te, "resolve_encoder", _missing)
    with pytest.raises(ValueError, match="not installed and 2 caches"):
        te.text_embeddings(cfg, items, "toy")


def test_a_cache_written_before_its_content_record_is_upgraded_on_its_next_hit(tmp_path, monkeypatch):
    """A cache whose .json lacks the content record cannot serve a machine without the encoder: that machine says
    so (naming the file); the next run where the encoder is installed adds the record, and then the copy serves."""
    import json

    te, enc, cfg, items = _encoder_installed(tmp_path, monkeypatch)
    emb = te.text_embeddings(cfg, items, "toy")
    meta_path = te.cache_path(cfg, items, "toy")[0][:-3] + ".json"
    meta = json.load(open(meta_path))
    json.dump({k: v for k, v in meta.items() if k not in ("content", "weights")}, open(meta_path, "w"))  # older
    monkeypatch.setattr(te, "resolve_encoder", _missing)
    with pytest.raises(ValueError, match=r"toy_minilm_.*\.pt may hold these items' embeddings, but its .json does not"):
        te.text_embeddings(cfg, items, "toy")
    monkeypatch.setattr(te, "resolve_encoder", lambda name: str(enc))
    assert torch.equal(te.text_embeddings(cfg, items, "toy"), emb)  # a hit by the full key: record added
    assert json.load(open(meta_path)) == meta
    monkeypatch.setattr(te, "resolve_encoder", _missing)
    assert torch.equal(te.text_embeddings(cfg, items, "toy"), emb)
