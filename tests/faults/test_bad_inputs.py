"""Malformed inputs stop with one message naming the file and the fix (no pickle / zip / codec tracebacks)."""
import json

import pytest
import torch

from genrec.cli import main
from genrec.config import EmbeddingConfig, load_config
from genrec.data.table import read_table
from genrec.embeddings import item_embeddings
from genrec.training import loop

ITEMS = [{"title": f"item {i}"} for i in range(5)]


def test_corrupt_embedding_cache_names_the_file(tmp_path):
    from genrec.embeddings.text_encoder import cache_path

    cfg = EmbeddingConfig(cache_dir=str(tmp_path))
    path, _ = cache_path(cfg, ITEMS, "toy")
    tmp_path.joinpath(path).parent.mkdir(parents=True, exist_ok=True)
    open(path, "wb").write(b"not a torch file")
    with pytest.raises(ValueError, match=r"embedding cache .* is damaged .*delete it"):
        item_embeddings(cfg, ITEMS, "toy")


def test_empty_and_non_utf8_tables_name_the_file(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty.csv"):
        read_table(str(tmp_path / "empty.csv"))
    (tmp_path / "bad.jsonl").write_bytes(b'{"user_id": "u", "item_id": "\xff\xfe", "timestamp": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl"):
        read_table(str(tmp_path / "bad.jsonl"))


def test_long_numeric_ids_stay_distinct(tmp_path):
    # 26-digit ids overflow int64 and lose digits as floats: they must stay exact text
    a, b = "12345678901234567890123456", "12345678901234567890123457"
    (tmp_path / "i.csv").write_text(f"user_id,item_id,timestamp\n{a},{a},1\n{a},{b},2\n{a},{a},3\n")
    data = read_table(str(tmp_path / "i.csv"))
    assert [data.items[i - 1]["item_key"] for i in data.sequences[0]] == [a, b, a]


@pytest.mark.slow
def test_corrupt_checkpoint_and_best_weights_name_the_file(tmp_path, kill_at_validation, capsys):
    def cfg():
        return load_config(["configs/tiny.yaml"], [f"output_dir={tmp_path}/runs", f"results_dir={tmp_path}/results",
                                                   "train.progress=false", "train.epochs=2", "name=r"])

    kill_at_validation(2)
    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg())
    kill_at_validation.disarm()
    ckpt = tmp_path / "runs" / "r" / "checkpoint"
    model_file = next(p for p in ckpt.iterdir() if p.name.startswith("pytorch_model") or p.name.startswith("model"))
    model_file.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"checkpoint .*checkpoint cannot be loaded.*delete it"):
        loop.train(cfg())
    (tmp_path / "runs" / "r" / "best_model.pt").write_bytes(b"garbage")
    assert main(["eval", str(tmp_path / "runs" / "r")]) == 2
    err = capsys.readouterr().err
    assert "best_model.pt is damaged" in err and len(err.strip().splitlines()) == 1


def test_a_replaced_semantic_id_artifact_is_refused(tmp_path):
    from genrec.sids import build_sids

    cfg = load_config(["configs/tiny.yaml", "configs/tiny/decoder.yaml"],
                      [f"tokenizer.out_dir={tmp_path}", "tokenizer.rqvae.epochs=2"])
    sids = build_sids(cfg)
    path = sids.tokenizer_path.replace(".tokenizer.pt", ".pt")
    obj = torch.load(path, weights_only=True)
    meta = json.loads(obj["meta"])
    meta["dataset"] = "beauty"
    obj["meta"] = json.dumps(meta)
    torch.save(obj, path)
    with pytest.raises(ValueError, match="was built for dataset 'beauty'"):
        build_sids(cfg)
