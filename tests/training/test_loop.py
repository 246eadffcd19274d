"""End-to-end: the loop trains SASRec on the embedded tiny dataset, writes a record, and resumes after a crash."""
import json
import os

import pytest

from genrec.config import ConfigError, load_config
from genrec.data import SequenceDataset, Split
from genrec.training import loop


def _cfg(tmp_path, *overrides):
    return load_config(["configs/tiny.yaml"], [
        f"output_dir={tmp_path}/runs", f"results_dir={tmp_path}/results", "train.progress=false",
        "train.epochs=4", "train.lr=0.005", "train.log_every=5", *overrides,
    ])


@pytest.mark.slow
def test_train_learns_and_writes_record(tmp_path):
    record = loop.train(_cfg(tmp_path))
    hist = record["validation_history"]
    assert len(hist) == 4 and hist[-1]["ndcg@10"] > hist[0]["ndcg@10"]
    # The tiny shop follows a successor rule 70% of the time; random ranking gives NDCG@10 ~ 0.02.
    assert record["metrics"]["ndcg@10"] > 0.3
    assert record["users_evaluated"] == 600
    with open(record["path"]) as f:
        saved = json.load(f)
    for key in ("dataset", "model", "split", "metrics", "command", "git_commit", "device", "date", "wall_seconds",
                "config"):
        assert key in saved
    assert set(saved["metrics"]) >= {"recall@5", "ndcg@5", "recall@10", "ndcg@10"}
    assert os.path.isfile(os.path.join(tmp_path, "runs", record["run_name"], "config.yaml"))


@pytest.mark.slow
def test_killed_run_resumes_and_matches_uninterrupted(tmp_path, monkeypatch):
    reference = loop.train(_cfg(tmp_path / "a", "name=ref"))

    calls = {"n": 0}
    real_evaluate = loop.evaluate

    def crash_on_second_validation(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated kill during epoch 2")
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", crash_on_second_validation)
    with pytest.raises(KeyboardInterrupt):
        loop.train(_cfg(tmp_path / "b", "name=ref"))
    state = json.load(open(tmp_path / "b" / "runs" / "ref" / "checkpoint" / "trainer_state.json"))
    assert state["epoch"] == 1 and not state["done"]

    monkeypatch.setattr(loop, "evaluate", real_evaluate)
    resumed = loop.train(_cfg(tmp_path / "b", "name=ref"))
    assert resumed["epochs_run"] == 4
    assert [h["epoch"] for h in resumed["validation_history"]] == [1, 2, 3, 4]
    assert resumed["metrics"] == pytest.approx(reference["metrics"])
    assert resumed["validation_history"] == pytest.approx(reference["validation_history"])
    assert (resumed["real_tokens"], resumed["computed_tokens"]) == (reference["real_tokens"],
                                                                    reference["computed_tokens"])
    # the record says the run took two starts; wall_seconds is the last start's alone
    assert (reference["sessions"], resumed["sessions"]) == (1, 2)
    assert resumed["git_commits"] == [resumed["git_commit"]]


@pytest.mark.slow
def test_eval_reproduces_the_record_and_changes_only_the_protocol(tmp_path):
    record = loop.train(_cfg(tmp_path, "train.epochs=2"))
    run_dir = os.path.join(tmp_path, "runs", record["run_name"])
    again = loop.evaluate_run(run_dir, [f"results_dir={tmp_path}/results", "train.progress=false"])
    assert again["metrics"] == record["metrics"]  # same weights, same users, same evaluator
    assert again["evaluated_run"] == record["run_name"] and again["protocol"] == "all_items"
    facts = again["trained"]  # the run folder's account of its training equals the run's own record
    for key in ("best_epoch", "epochs_run", "global_steps", "train_seconds", "real_tokens", "computed_tokens",
                "real_tokens_per_s", "num_params", "trainable_params"):
        assert facts[key] == record[key], key
    assert facts["validation_history"] == record["validation_history"]
    assert (facts["devices"], facts["git_commits"], facts["sessions"]) == ([record["device"]], [record["git_commit"]], 1)
    seen = loop.evaluate_run(run_dir, [f"results_dir={tmp_path}/results", "eval.exclude_history=true"])
    assert seen["protocol"] == "exclude_history" and seen["path"] != again["path"]
    assert seen["metrics"]["users"] == record["metrics"]["users"]
    window = loop.evaluate_run(run_dir, [f"results_dir={tmp_path}/results", "eval.exclude_history=true",
                                         "eval.exclude_scope=window"])
    assert window["protocol"] == "exclude_history_window" and window["path"] != seen["path"]
    with pytest.raises(ValueError, match="exclude_scope"):
        loop.evaluate_run(run_dir, ["eval.exclude_scope=some"])
    with pytest.raises(ConfigError, match="train.lr"):
        loop.evaluate_run(run_dir, ["train.lr=0.1"])


@pytest.mark.slow
def test_a_run_that_ran_out_of_epochs_continues_when_given_more(tmp_path):
    short = loop.train(_cfg(tmp_path / "a", "name=r", "train.epochs=2", "train.patience=100"))
    longer = loop.train(_cfg(tmp_path / "a", "name=r", "train.epochs=4", "train.patience=100"))
    straight = loop.train(_cfg(tmp_path / "b", "name=r", "train.epochs=4", "train.patience=100"))
    assert short["epochs_run"] == 2 and longer["epochs_run"] == 4
    assert [h["epoch"] for h in longer["validation_history"]] == [1, 2, 3, 4]
    assert longer["validation_history"] == pytest.approx(straight["validation_history"])


@pytest.mark.slow
def test_train_on_valid_runs_no_validation_and_tests_the_last_weights(tmp_path):
    with pytest.raises(ConfigError, match="data.train_on_valid"):
        _cfg(tmp_path, "data.train_on_valid=true")  # validation metrics would be of trained-on targets
    record = loop.train(_cfg(tmp_path, "data.train_on_valid=true", "eval.splits=[test]", "train.epochs=2"))
    assert record["validation_history"] == [] and record["best_epoch"] == record["epochs_run"] == 2
    assert set(record["all_splits"]) == {"test"} and record["train_on_valid"]
    # best_model.pt holds the last weights: re-evaluating it reproduces the record
    again = loop.evaluate_run(os.path.join(tmp_path, "runs", record["run_name"]),
                              [f"results_dir={tmp_path}/results", "train.progress=false"])
    assert again["metrics"] == record["metrics"]


@pytest.mark.slow
def test_record_counts_every_real_and_computed_training_token(tmp_path):
    cfg = _cfg(tmp_path, "train.epochs=2", "train.patience=100")
    record = loop.train(cfg)
    rows = SequenceDataset(Split(loop.load_dataset(cfg.data), cfg.data.max_history))
    real = sum(int((rows[i]["input"] != 0).sum()) for i in range(len(rows)))
    assert record["real_tokens"] == 2 * real  # every row once per epoch, padding excluded
    assert record["computed_tokens"] == 2 * len(rows) * cfg.data.max_history
    assert record["padding_ratio"] == round(record["computed_tokens"] / record["real_tokens"], 3)
    assert 0 < record["step_seconds"] <= record["train_seconds"] and record["real_tokens_per_s"] > 0
