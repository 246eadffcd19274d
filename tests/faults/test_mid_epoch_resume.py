"""A run killed in the middle of an epoch (after a train.checkpoint_steps checkpoint) resumes to exactly the
numbers of the uninterrupted run."""
import json

import pytest

from genrec.config import load_config
from genrec.training import loop


def _cfg(root, *o):
    return load_config(["configs/tiny.yaml"], [f"output_dir={root}/runs", f"results_dir={root}/results",
                                               "train.progress=false", "train.epochs=3", "train.checkpoint_steps=4",
                                               "name=r", *o])


@pytest.mark.slow
def test_kill_after_a_mid_epoch_checkpoint_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    reference = loop.train(_cfg(tmp_path / "a"))
    real_save, calls = loop.Checkpointer.save, {"n": 0}

    def save_then_die(self, state):
        real_save(self, state)
        calls["n"] += 1
        if state["batch_in_epoch"] and calls["n"] == 4:  # a mid-epoch checkpoint of epoch 2
            raise KeyboardInterrupt("killed right after a mid-epoch checkpoint")

    monkeypatch.setattr(loop.Checkpointer, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        loop.train(_cfg(tmp_path / "b"))
    state = json.load(open(tmp_path / "b" / "runs" / "r" / "checkpoint" / "trainer_state.json"))
    assert state["batch_in_epoch"] > 0  # the kill was mid-epoch
    monkeypatch.setattr(loop.Checkpointer, "save", real_save)
    resumed = loop.train(_cfg(tmp_path / "b"))
    assert resumed["validation_history"] == pytest.approx(reference["validation_history"])
    assert resumed["metrics"] == pytest.approx(reference["metrics"])


@pytest.mark.slow
def test_kill_during_the_test_evaluation_resumes_its_finished_batches(tmp_path, kill_in_evaluation):
    """The final test keeps its finished batches in the run folder; a run killed in the middle of it and started
    again trains nothing, scores only the batches left and writes the uninterrupted record's metrics."""
    o = ("train.epochs=2", "eval.batch_size=100")  # 600 test users: 6 batches
    reference = loop.train(_cfg(tmp_path / "a", *o))
    seen = kill_in_evaluation(2)
    with pytest.raises(KeyboardInterrupt):
        loop.train(_cfg(tmp_path / "b", *o))
    kill_in_evaluation.disarm()
    resumed = loop.train(_cfg(tmp_path / "b", *o))
    assert seen == [0, 2, 0]  # killed in the first split (valid); the restart resumes it at batch 2, then test
    valid = resumed["all_splits"]["valid"]
    assert valid.pop("resumed_batches") == 2 and valid.pop("eval_commits")  # the record says it was resumed
    assert resumed["all_splits"] == reference["all_splits"]  # the interrupted split (valid) included
    assert resumed["validation_history"] == pytest.approx(reference["validation_history"])
    assert not list((tmp_path / "b" / "runs" / "r").glob("eval-*.partial.pt"))
