"""Run names: readable, seed-aware, and keyed on the values that differ from the schema defaults."""
import dataclasses

from genrec import config as config_mod
from genrec.config import load_config
from genrec.config import to_dict
from genrec.training.naming import config_delta, run_name


def _name(*overrides, files=("configs/sasrec/beauty.yaml",)):
    return run_name(load_config(list(files), list(overrides)))


def test_name_reads_as_files_overrides_and_seed():
    name = _name("train.lr=0.002", "seed=3")
    assert name.startswith("sasrec-beauty__train.lr=0.002__s3-")


def test_values_that_change_results_change_the_name():
    base = _name()
    assert _name("train.lr=0.002") != base
    assert _name("seed=1") != base
    assert _name("model.sasrec.dropout=0.3") != base


def test_bookkeeping_keys_leave_the_name_alone():
    base = _name()
    for o in ("train.progress=false", "train.threads=1", "train.resume=false", "train.finish=true",
              "train.trackers=[tensorboard]", "train.log_every=7", "output_dir=/elsewhere", "results_dir=/x",
              "model.llm.cache_dir=/tmp/tok"):
        assert _name(o) == base, o


def test_a_new_schema_field_with_a_default_keeps_existing_names(monkeypatch):
    before = _name("train.lr=0.002")

    @dataclasses.dataclass
    class EvalWithNewField(config_mod.EvalConfig):
        some_new_option: bool = False

    @dataclasses.dataclass
    class ExperimentWithNewField(config_mod.ExperimentConfig):
        eval: EvalWithNewField = dataclasses.field(default_factory=EvalWithNewField)

    monkeypatch.setattr(config_mod, "ExperimentConfig", ExperimentWithNewField)
    import genrec.training.naming as naming

    monkeypatch.setattr(naming, "ExperimentConfig", ExperimentWithNewField)
    cfg = load_config(["configs/sasrec/beauty.yaml"], ["train.lr=0.002"])
    assert "some_new_option" in to_dict(cfg)["eval"]
    assert run_name(cfg) == before
    assert "eval.some_new_option" not in config_delta(to_dict(cfg))


def test_long_overrides_are_cut_between_overrides_never_inside_a_value():
    overrides = ["model.sasrec.mask_padding=true", "model.sasrec.attention=sdpa", "model.sasrec.window=50"]
    assert _name(*overrides).split("__")[1] == "_".join(overrides)  # 81 characters: all spelled out
    many = [*overrides[:2]] + [f"train.lr=0.00{i}" for i in range(1, 6)] + [overrides[2]]  # 156 characters
    part = _name(*many).split("__")[1]
    assert part == "_".join(many[:6]) + "_+2", part  # 6 whole overrides are 118 characters, 7 would be 133
    assert _name(*many) != _name(*many[:-1], "model.sasrec.window=5")  # the hash keeps what the name leaves out


def test_one_override_longer_than_the_limit_is_counted_not_cut():
    long_path = "data.path=" + "d/" * 70 + "x.csv"
    part = run_name(load_config(["configs/sasrec/beauty.yaml"], [long_path])).split("__")[1]
    assert part == "+1"
