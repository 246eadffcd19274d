"""Config values and choices fail at load time, naming key, value and what was expected (genrec.checks)."""
import pytest

from genrec.checks import CHOICES, RANGES
from genrec.config import ConfigError, ExperimentConfig, load_config


@pytest.mark.parametrize("override,expected", [
    ("train.batch_size=0", "train.batch_size=0 must be > 0"),
    ("train.grad_accum=0", "train.grad_accum=0 must be > 0"),
    ("train.eval_every=0", "train.eval_every=0 must be > 0"),
    ("train.epochs=0", "train.epochs=0 must be > 0"),
    ("data.max_history=0", "data.max_history=0 must be > 0"),
    ("model.sasrec.hidden=-4", "model.sasrec.hidden=-4 must be > 0"),
    ("model.parallel.dropout=1.5", "model.parallel.dropout=1.5 must be in [0, 1)"),
    ("eval.beam_size=0", "eval.beam_size=0 must be > 0"),
    ("train.monitor=ndcg@50", "train.monitor='ndcg@50' must be ndcg@K or recall@K with K in eval.ks=[5, 10]"),
    ("eval.splits=[valid,tset]", "eval.splits=['valid', 'tset'] must name 'valid' and/or 'test'"),
    ("model.attention=flesh", "model.attention='flesh' is not one of"),
    ("model.kind=sasrek", "Did you mean 'sasrec'?"),
    ("train.precision=bf15", "train.precision='bf15' is not one of ['auto', 'bf16', 'fp16', 'no']"),
    ("eval.ks=[0,10]", "eval.ks=[0, 10] must be a non-empty list of positive cut-offs"),
    ("model.sasrec.reference_details=true", "model.sasrec.reference_details=true needs model.sasrec.mask_padding"),
    ("model.sasrec.attention=flesh", "model.sasrec.attention='flesh' is not one of"),
    ("model.sasrec.window=50", "model.sasrec.window=50 needs a kernel with a window: set model.sasrec.attention to sdpa"),
    ("model.sasrec.window=50 model.sasrec.attention=linear", "'linear' has none"),
    ("model.sasrec.window=-1", "model.sasrec.window=-1 must be >= 0"),
])
def test_bad_values_fail_at_load_naming_key_value_and_expectation(override, expected):
    with pytest.raises(ConfigError) as e:
        load_config([], override.split())  # one or more overrides
    assert expected in str(e.value)


def test_every_error_is_reported_at_once():
    with pytest.raises(ConfigError) as e:
        load_config([], ["train.batch_size=0", "model.attention=flesh"])
    assert "train.batch_size" in str(e.value) and "model.attention" in str(e.value)


def test_the_table_covers_real_keys_and_defaults_pass():
    cfg = ExperimentConfig()
    for key in [*RANGES, *CHOICES]:
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)  # a misspelled key in the table fails here
    load_config([], [])  # the schema defaults satisfy every rule
    assert load_config([], ["train.batch_size=0"], validate=False).train.batch_size == 0


def test_cutoffs_at_or_above_the_catalog_are_refused_when_the_data_is_known(tmp_path):
    from genrec.training import loop

    cfg = load_config(["configs/tiny.yaml"], ["eval.ks=[10,500]", f"output_dir={tmp_path}/runs",
                                              f"results_dir={tmp_path}/results", "train.progress=false"])
    with pytest.raises(ValueError, match=r"K=500 is not below the 240 items of tiny"):
        loop.train(cfg)
