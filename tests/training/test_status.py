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
from genrec.training.status import SESSIONS_FILE, format_status, run_status


def _cfg(tmp_path, *o):
    return load_config(["configs/tiny.yaml"], [
        f"output_dir={tmp_path}/runs", f"results_dir={tmp_path}/results", "train.progress=false", "name=r[1]",
        "train.epochs=3", "train.grad_accum=2", "train.checkpoint_steps=3", "eval.batch_size=100", *o])


@pytest.mark.slow
def test_status_follows_a_run_through_kills_in_training_and_in_its_final_evaluation(tmp_path, kill_at_validation,
                                                                                     kill_in_evaluation, monkeypatch,
                                                                                     capsys):
    run_dir = f"{tmp_path}/runs/r[1]"  # brackets, as an override like eval.splits=[test] puts in a name
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

    kill_in_evaluation(2)
    with pytest.raises(KeyboardInterrupt):
        loop.train(_cfg(tmp_path))  # resumes, trains to the end, dies in the first split of the final evaluation
    kill_in_evaluation.disarm()
    s = run_status(run_dir)
    assert s["status"] == "trained; test not finished (the same command resumes it)"
    assert [(t["split"], t["batches_scored"], t["batches"], t["by"]) for t in s["evaluations_in_progress"]] == [
        ("valid", 2, 6, "the run's final test")]
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

    kill_at_validation(1)  # given a 4th epoch, killed at its validation: training again, after a mid-epoch checkpoint
    with pytest.raises(KeyboardInterrupt):
        loop.train(_cfg(tmp_path, "train.epochs=4"))
    kill_at_validation.disarm()
    s = run_status(run_dir)
    with open(f"{run_dir}/checkpoint/trainer_state.json") as f:
        step4 = json.load(f)["global_step"]
    assert 3 * spe < step4 < 4 * spe and s["total_steps"] == 4 * spe  # counted from where the checkpoint stands
    assert s["status"] == (f"stopped: epoch 4 of 4, step {step4:,} of {4 * spe:,} (result.json is of an earlier end, "
                           f"step {3 * spe})")
    assert s["seconds_per_step"] > 0 and "session_seconds_per_step" not in s  # a few steps: the mean pace


def test_status_of_a_folder_that_is_no_run_names_the_missing_file(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert f"{tmp_path}/config.yaml not found" in capsys.readouterr().err


def _folder(tmp_path, *overrides, state: dict, sessions: list[dict]):
    """A run folder written by hand: a config, a checkpoint state and session lines (no weights: status reads none)."""
    from genrec.config import save_config

    run = tmp_path / "run"
    save_config(load_config(["configs/tiny.yaml"], list(overrides)), str(run / "config.yaml"))
    (run / "checkpoint").mkdir(parents=True)
    (run / "checkpoint" / "trainer_state.json").write_text(json.dumps(
        {"batch_in_epoch": 0, "best": -1.0, "best_epoch": -1, "history": [], "done": False, "step_seconds": 100.0,
         "train_seconds": 120.0, "real_tokens": 1000, "computed_tokens": 1500, **state}))
    base = {"date": "d", "command": "genrec train", "git_commit": "c", "device": "cpu", "processes": 1,
            "start_epoch": 0, "start_step_seconds": 0.0, "start_real_tokens": 0}
    (run / SESSIONS_FILE).write_text("".join(json.dumps({**base, **e}) + "\n" for e in sessions))
    return str(run)


def test_total_steps_honour_max_steps_and_a_change_of_steps_per_epoch_and_time_left_uses_the_newest_pace(tmp_path):
    run = _folder(tmp_path, "train.epochs=3", "train.max_steps=10000", state={"epoch": 1, "global_step": 100},
                  sessions=[{"steps_per_epoch": 100, "start_step": 0}])
    assert run_status(run)["total_steps"] == 300  # three epochs come before 10,000 steps
    run = _folder(tmp_path / "b", "train.epochs=3", "train.max_steps=150", state={"epoch": 1, "global_step": 100},
                  sessions=[{"steps_per_epoch": 100, "start_step": 0}])
    assert run_status(run)["total_steps"] == 150
    # 2 processes for epoch 1 (100 steps of 1 s), then 1 process (200 steps per epoch) from step 100 at 0.25 s
    run = _folder(tmp_path / "c", "train.epochs=3", state={"epoch": 1, "global_step": 140, "step_seconds": 110.0},
                  sessions=[{"steps_per_epoch": 100, "start_step": 0},
                            {"steps_per_epoch": 200, "start_step": 100, "start_step_seconds": 100.0}])
    s = run_status(run)
    assert s["total_steps"] == 140 + 2 * 200  # epochs 2 and 3 at the new count; no micro-batch of epoch 2 is done
    assert s["session_seconds_per_step"] == 0.25 and s["train_hours_left"] == round(400 * 0.25 / 3600, 2)
    run = _folder(tmp_path / "d", "train.epochs=3", state={"epoch": 1, "global_step": 110, "step_seconds": 104.0},
                  sessions=[{"steps_per_epoch": 100, "start_step": 0},
                            {"steps_per_epoch": 100, "start_step": 100, "start_step_seconds": 100.0}])
    s = run_status(run)  # 10 steps into a session: too few for its own pace, the run's mean sets the time left
    assert "session_seconds_per_step" not in s and s["train_hours_left"] == round(190 * 104 / 110 / 3600, 2)


def test_a_torn_session_line_a_checkpoint_between_renames_and_a_lock_are_reported(tmp_path):
    import platform
    import subprocess

    run = _folder(tmp_path, "train.epochs=3", state={"epoch": 1, "global_step": 100},
                  sessions=[{"steps_per_epoch": 100, "start_step": 0}])
    with open(f"{run}/{SESSIONS_FILE}", "a") as f:
        f.write('{"date": "d", "comm')  # killed while appending
    os.rename(f"{run}/checkpoint", f"{run}/checkpoint.tmp")  # killed after the new checkpoint, before the renames
    s = run_status(run)
    assert s["unreadable_session_lines"] == 1 and len(s["sessions"]) == 1 and s["global_steps"] == 100
    assert s["status"] == "stopped: epoch 2 of 3, step 100 of 300"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with open(f"{run}/.lock", "w") as f:
            f.write(f"{child.pid}@{platform.node()}")
        s = run_status(run)
        assert s["running_pid"] == child.pid and s["status"].startswith("training: epoch 2 of 3")
    finally:
        child.kill()
        child.wait()
    with open(f"{run}/.lock", "w") as f:
        f.write("123@another-host")
    s = run_status(run)
    assert s["running_pid"] is None and s["locked_on_other_host"] == "123@another-host"


def test_out_is_written_even_when_the_reader_of_the_printout_goes_away(tmp_path):
    """``genrec status run --out f | head -3``: the progress file is written before the printout, which a closed
    pipe cuts short."""
    import subprocess
    import sys

    run = _folder(tmp_path, "train.epochs=3", state={"epoch": 1, "global_step": 100},
                  sessions=[{"steps_per_epoch": 100, "start_step": 0}])
    out = tmp_path / "progress.json"
    proc = subprocess.Popen([sys.executable, "-m", "genrec", "status", run, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is printed
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1 and "Traceback" not in err, err
    assert json.loads(out.read_text())["run_folder"] == run


def test_time_a_run_was_stopped_is_shown_apart_from_its_training_time(tmp_path):
    run = _folder(tmp_path, "train.epochs=3", state={"epoch": 1, "global_step": 100, "paused_seconds": 1800.0},
                  sessions=[{"steps_per_epoch": 100, "start_step": 0}])
    s = run_status(run)
    assert (s["train_seconds"], s["paused_seconds"]) == (120.0, 1800.0)
    assert "0.03 h trained (and 0.50 h stopped, not counted)" in format_status(s)
    plain = run_status(_folder(tmp_path / "b", "train.epochs=3", state={"epoch": 1, "global_step": 100},
                               sessions=[{"steps_per_epoch": 100, "start_step": 0}]))
    assert plain["paused_seconds"] == 0.0 and "stopped, not counted" not in format_status(plain)
