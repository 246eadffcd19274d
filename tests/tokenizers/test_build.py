"""build_sids end to end on the embedded tiny dataset (encoder stubbed, so no model download or load)."""
import json
import os

import pytest
import torch

from genrec.config import load_config
from genrec.embeddings import text_encoder
from genrec.sids import build_sids
from genrec.tokenizers import SemanticIds, load_tokenizer
from genrec import sids as build_mod


def _fake_encode(texts, *args, **kwargs):
    # Content-dependent vectors: items of one product type land near each other.
    vecs = []
    for t in texts:
        g = torch.Generator().manual_seed(sum(map(ord, t.split(".")[0].split()[-3:][0])) % 1000)
        vecs.append(torch.randn(16, generator=g) + 0.01 * len(t))
    return torch.nn.functional.normalize(torch.stack(vecs), dim=-1)


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setattr(text_encoder, "encode_texts", _fake_encode)
    return load_config([], [
        "data.name=tiny", f"embedding.cache_dir={tmp_path}/emb", f"tokenizer.out_dir={tmp_path}/sids",
        "tokenizer.kind=rkmeans", "tokenizer.codebook_size=8", "tokenizer.num_levels=2",
    ])


def test_build_sids_writes_artifact_report_and_plot(cfg):
    sids = build_sids(cfg)
    assert sids.num_items == 240 and sids.num_levels == 3
    assert sids.codebook_sizes[:2] == [8, 8] and sids.codebook_sizes[2] >= 1
    assert len(torch.unique(sids.codes, dim=0)) == 240
    assert sids.dataset == "tiny" and len(sids.embedding_sha256) == 64 and sids.tokenizer == "rkmeans"
    report = json.load(open(sids.extra["report"]))
    assert report["codebook_sizes_after_dedup"] == sids.codebook_sizes
    assert 0 < report["reconstruction"] < 1  # 2 levels x 8 codes on 240 items: lossy, better than the mean
    assert report["collisions"]["max_group"] == sids.codebook_sizes[-1]
    assert [lv["codebook_size"] for lv in report["levels"]] == [8, 8]
    assert os.path.isfile(report["plot"])
    # the saved tokenizer encodes "new" items without refitting: copies of items 1 and 2 get their prefixes
    # and the next free collision digits
    tok = load_tokenizer(sids.tokenizer_path)
    assert tok.num_levels == 2
    emb = torch.load(next(p for p in (os.path.join(cfg.embedding.cache_dir, f) for f in os.listdir(cfg.embedding.cache_dir))
                          if p.endswith(".pt")))["embeddings"]
    before = sids.codes.clone()
    new = sids.add_embeddings(emb[:2], grow=True)
    assert torch.equal(new[:, :2], before[:2, :2]) and sids.num_items == 242
    assert len(torch.unique(sids.codes, dim=0)) == 242


def test_build_sids_second_call_loads(cfg, monkeypatch):
    first = build_sids(cfg)
    monkeypatch.setattr(build_mod, "fit_sids", lambda *a, **k: pytest.fail("refitted instead of loading"))
    second = build_sids(cfg)
    assert torch.equal(first.codes, second.codes) and first.codebook_sizes == second.codebook_sizes


def test_build_sids_key_changes_with_tokenizer_config(cfg):
    a = build_sids(cfg)
    cfg.tokenizer.seed = 1
    b = build_sids(cfg)
    assert a.extra["report"] != b.extra["report"]
    assert isinstance(SemanticIds.load(a.extra["report"].replace(".report.json", ".pt")), SemanticIds)


def test_opq_rotation_fix_changes_only_the_keys_of_the_codes_it_changes():
    """The OPQ rotation fix (trained against a PQ of codebook_size codes) changed the codes of rotated OPQ with
    codebook sizes other than 256 only: those configs get new keys, every other artifact keeps its key."""
    import dataclasses
    import hashlib

    def old_key(cfg):  # the key before the fix
        tcfg = dataclasses.asdict(cfg.tokenizer)
        tcfg.pop("out_dir")
        payload = json.dumps({"emb": "e", "tok": tcfg, "v": build_mod.FIT_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    opq64 = ["tokenizer.kind=opq", "tokenizer.codebook_size=64"]
    pq64 = ["tokenizer.kind=pq", "tokenizer.codebook_size=64"]
    for over, moved in [([], False), (["tokenizer.kind=opq"], False), (pq64, False),
                        ([*opq64, "tokenizer.opq.rotation=false"], False), (opq64, True)]:
        cfg = load_config([], over)
        assert (old_key(cfg) not in build_mod.sids_path(cfg, "d", "e")) == moved, over


def test_reconstruction_error_against_hand_computed_cases():
    from genrec.tokenizers import TOKENIZERS
    from genrec.tokenizers.report import reconstruction_error

    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [2.0, 4.0]])  # mean (1, 2); sum ||x - mean||^2 = 20

    class Stub:
        decodes_to_input = True

        def __init__(self, rec):
            self.rec = rec

        def decode(self, codes):
            return self.rec

    assert reconstruction_error(Stub(x.clone()), x, torch.zeros(4, 1)) == 0.0
    assert reconstruction_error(Stub(x.mean(0).expand(4, 2)), x, torch.zeros(4, 1)) == 1.0
    assert reconstruction_error(Stub(x + torch.tensor([1.0, 0.0])), x, torch.zeros(4, 1)) == 4 / 20
    assert reconstruction_error(Stub(x[:, :1]), x, torch.zeros(4, 1)) is None  # another space: no figure
    rand = TOKENIZERS["random"](num_levels=2, codebook_size=4).fit(x)
    assert reconstruction_error(rand, x, rand.encode(x)) is None
    y = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    whitened = TOKENIZERS["opq"](num_levels=2, codebook_size=4, rotation=False, pca_dim=4).fit(y)  # decodes (64, 4)
    assert reconstruction_error(whitened, y, whitened.encode(y)) is None  # ... in the whitened space: no figure
