import pytest

from genrec.config import ConfigError, load_config, lookup


def test_stacked_files_and_overrides(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("train:\n  lr: 0.01\n  epochs: 5\nmodel:\n  kind: sasrec\n")
    delta = tmp_path / "delta.yaml"
    delta.write_text("train:\n  lr: 0.002\n")
    cfg = load_config([str(base), str(delta)], ["train.epochs=7", "eval.ks=[1,10,20]"])
    assert cfg.train.lr == 0.002 and cfg.train.epochs == 7 and cfg.eval.ks == [1, 10, 20]
    assert cfg.sources == [str(base), str(delta), "train.epochs=7", "eval.ks=[1,10,20]"]


def test_misspelled_key_names_key_file_and_choices(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config([str(bad)])
    msg = str(e.value)
    assert "bad.yaml" in msg and "train.learning_rate" in msg and "'lr'" in msg


def test_wrong_type_names_key_and_origin():
    with pytest.raises(ConfigError, match=r"override 'train.epochs=many'.*train.epochs"):
        load_config([], ["train.epochs=many"])


def test_override_without_equals_and_missing_file():
    with pytest.raises(ConfigError, match="key=value"):
        load_config([], ["train.lr"])
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(["nope.yaml"])


def test_lookup_lists_choices_and_suggests():
    with pytest.raises(ValueError, match=r"model.kind='sasrek' is not one of \['sasrec', 'tiger'\]. Did you mean 'sasrec'"):
        lookup({"sasrec": 1, "tiger": 2}, "sasrek", field="model.kind")
