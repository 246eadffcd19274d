"""``genrec status``: the run folder alone says how far a run got (stopped mid-epoch, killed in its final
evaluation, finished) and which sessions trained it; a folder from before sessions were logged still gets its
steps per epoch."""
import json
import os
import sys

import pytest

from genrec.cli import main
from genrec.config import load_config
from genrec.training import loop
from genrec.training.status import SESSIONS_FILE, run_status


def _cfg(tmp_path, *o):
    return load_config(["configs/tiny.yaml"], [
        f"output_dir={tmp_path}/runs", f"results_dir={tmp_path}/results", "train.progress=false", "name=r",
        "train.epochs=3", "train.grad_accum=2", "train.checkpoint_steps=3", "eval.batch_size=100", *o])


@pytest.mark.slow
def test_status_follows_a_run_through_kills_in_training_and_in_its_final_evaluation(tmp_path, kill_at_validation,
                                                                                     monkeypatch, capsys):
    run_dir = f"{tmp_path}/runs/r"
    kill_at_validation(2)  # killed at the end of epoch 2: the last checkpoint is one of checkpoint_steps in it
    with pytest.raises(KeyboardInterrupt):
        loop.train(_cfg(tmp_path))
    kill_at_validation.disarm()
    with open(f"{run_dir}/checkpoint/trainer_state.json") as f:
        state = json.load(f)
    s = run_status(run_dir)
    (first,) = s["sessions"]
    spe, step = first["steps_per_epoch"], state["global_step"]
    assert state["epoch"] == 1 and state["batch_in_epoch"] > 0 and spe < step < 2 * spe  # a mid-epoch checkpoint
    assert (first["start_step"], first["processes"], first["epochs"]) == (0, 1, 3)
    assert s["status"] == f"stopped: epoch 2 of 3, step {step:,} of {3 * spe:,}" and s["running_pid"] is None
    assert (s["epochs_done"], s["global_steps"], s["total_steps"]) == (1, step, 3 * spe)
    assert s["validation_history"] == state["history"] and len(s["validation_history"]) == 1
    assert s["best_epoch"] == 1 and s["real_tokens"] == state["real_tokens"]
    assert s["train_hours_left"] == pytest.approx((3 * spe - step) * state["step_seconds"] / step / 3600, abs=0.01)
    os.rename(f"{run_dir}/{SESSIONS_FILE}", f"{tmp_path}/kept")  # a run folder from before sessions were logged
    assert run_status(run_dir)["steps_per_epoch"] == spe  # from the finished epoch and the micro-batches since
    os.rename(f"{tmp_path}/kept", f"{run_dir}/{SESSIONS_FILE}")

    ev = sys.modules["genrec.evaluation.evaluate"]
    real_save, real_init = ev.PartialEval.maybe_save, ev.PartialEval.__init__

    def init(self, folder, key, accelerator, save_seconds):
        real_init(self, folder, key, accelerator, 0.0)  # save after every batch

    def save_then_die(self, batches, *a):
        real_save(self, batches, *a)
        if batches == 2:
            raise KeyboardInterrupt("killed in the final evaluation")

    monkeypatch.setattr(ev.PartialEval, "__init__", init)
    monkeypatch.setattr(ev.PartialEval, "maybe_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        loop.train(_cfg(tmp_path))  # resumes, trains to the end, dies in the first split of the final evaluation
    monkeypatch.setattr(ev.PartialEval, "maybe_save", real_save)
    s = run_status(run_dir)
    assert s["status"] == "trained; test not finished (the same command resumes it)"
    assert [(t["split"], t["batches_scored"], t["batches"]) for t in s["tests"]] == [("valid", 2, 6)]
    assert [e["start_step"] for e in s["sessions"]] == [0, step] and s["global_steps"] == 3 * spe

    record = loop.train(_cfg(tmp_path))
    capsys.readouterr()
    out = tmp_path / "progress.json"
    monkeypatch.setattr(sys, "argv", ["genrec", "status", run_dir, "--out", str(out)])
    assert main(sys.argv[1:]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{run_dir}: sasrec on tiny: finished\n")
    assert f"ndcg@10 {record['metrics']['ndcg@10']:.4f}" in printed
    saved = json.loads(out.read_text())
    assert saved["status"] == "finished" and saved["record"]["metrics"] == record["metrics"]
    assert [e["start_step"] for e in saved["sessions"]] == [0, step, 3 * spe]
    assert saved["command"] == first["command"] and saved["git_commit"] == [first["git_commit"]]
    assert saved["written_by"] == f"genrec status {run_dir} --out {out}"  # the run's command stays its own


def test_status_of_a_folder_that_is_no_run_names_the_missing_file(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert f"{tmp_path}/config.yaml not found" in capsys.readouterr().err
