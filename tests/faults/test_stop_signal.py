"""SIGTERM / SIGUSR1 (a scheduler's preemption notice) stops a run at the next optimiser step with a checkpoint of
that step; the same command resumes it to exactly the uninterrupted numbers. Under two processes a signal that
reaches only one of them stops both at the same step."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from genrec.config import load_config
from genrec.training import loop
from genrec.training.stop import TrainingStopped

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cfg(root, *o):
    return load_config(["configs/tiny.yaml"], [f"output_dir={root}/runs", f"results_dir={root}/results",
                                               "train.progress=false", "train.epochs=3", "name=r", *o])


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_checkpoints_the_step_and_the_resumed_run_equals_the_uninterrupted_one(tmp_path, monkeypatch, sig):
    reference = loop.train(_cfg(tmp_path / "a"))
    before = signal.getsignal(sig)
    real_add, calls = loop._TokenMeter.add, {"n": 0}

    def add_then_signal(self, batch):  # the signal arrives during the 12th step (epoch 2)
        real_add(self, batch)
        calls["n"] += 1
        if calls["n"] == 12:
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(loop._TokenMeter, "add", add_then_signal)
    with pytest.raises(TrainingStopped) as stopped:
        loop.train(_cfg(tmp_path / "b"))
    assert stopped.value.signum == sig and stopped.value.step == 12
    assert signal.getsignal(sig) == before  # the loop's handler is gone again
    run_dir = tmp_path / "b" / "runs" / "r"
    state = json.load(open(run_dir / "checkpoint" / "trainer_state.json"))
    assert state["global_step"] == 12 and state["batch_in_epoch"] > 0 and not state["done"]
    assert not (run_dir / ".lock").exists()
    monkeypatch.setattr(loop._TokenMeter, "add", real_add)
    resumed = loop.train(_cfg(tmp_path / "b"))
    assert resumed["global_steps"] == reference["global_steps"] > 12
    assert resumed["validation_history"] == pytest.approx(reference["validation_history"])
    assert resumed["metrics"] == pytest.approx(reference["metrics"])


def _env():
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _command(root, *o):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "genrec",
            "train", "--config", "configs/tiny.yaml", "train.epochs=6", "train.batch_size=16", "train.log_every=3",
            "train.progress=false", "name=r", f"output_dir={root}/runs", f"results_dir={root}/results", *o]


def _rank1_worker(launcher_pid):
    """The pid of the worker with RANK=1 among the launcher's children."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if ppid == launcher_pid and b"RANK=1" in env:
            return int(pid)
    return None


@pytest.mark.slow
def test_two_processes_stop_at_one_step_when_only_one_gets_the_signal(tmp_path):
    done = subprocess.run(_command(tmp_path / "ref"), cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = json.load(open(tmp_path / "ref" / "results" / "runs" / "tiny" / "r.json"))

    run_dir = tmp_path / "run" / "runs" / "r"
    proc = subprocess.Popen(_command(tmp_path / "run"), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline, sent = time.time() + 600, False
    while not sent and time.time() < deadline and proc.poll() is None:
        try:
            epoch = json.load(open(run_dir / "checkpoint" / "trainer_state.json"))["epoch"]
        except (OSError, ValueError, KeyError):
            epoch = 0
        worker = _rank1_worker(proc.pid)
        if epoch >= 1 and worker:  # the first epoch is checkpointed: signal the second process only
            os.kill(worker, signal.SIGTERM)
            sent = True
        time.sleep(0.05)
    out = proc.communicate(timeout=600)[0]
    assert sent and proc.returncode != 0, out[-3000:]
    assert "SIGTERM received: checkpoint written at optimiser step" in out
    state = json.load(open(run_dir / "checkpoint" / "trainer_state.json"))
    assert state["global_step"] % 3 == 0 and not state["done"]  # agreed at a loss-log step (train.log_every=3)
    assert state["global_step"] < reference["global_steps"]

    done = subprocess.run(_command(tmp_path / "run"), cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed" in done.stdout
    resumed = json.load(open(tmp_path / "run" / "results" / "runs" / "tiny" / "r.json"))
    assert resumed["processes"] == 2
    assert resumed["global_steps"] == reference["global_steps"]
    assert resumed["validation_history"] == pytest.approx(reference["validation_history"])
    assert resumed["metrics"] == pytest.approx(reference["metrics"])


@pytest.mark.slow
def test_a_signal_during_the_last_validation_stops_before_the_test_and_the_rerun_only_tests(tmp_path, monkeypatch):
    reference = loop.train(_cfg(tmp_path / "a"))
    real_validate, calls = loop._validate, {"n": 0}

    def validate_then_signal(run, epoch):
        real_validate(run, epoch)
        calls["n"] += 1
        if epoch == 3:  # train.epochs=3: no training step comes after this one
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(loop, "_validate", validate_then_signal)
    tested = []
    monkeypatch.setattr(loop, "test", lambda run: tested.append(run) or {})
    with pytest.raises(TrainingStopped) as stopped:
        loop.train(_cfg(tmp_path / "b"))
    assert stopped.value.step == reference["global_steps"] and not tested  # stopped before the test
    state = json.load(open(tmp_path / "b" / "runs" / "r" / "checkpoint" / "trainer_state.json"))
    assert state["done"] and state["epoch"] == 3
    monkeypatch.undo()
    resumed = loop.train(_cfg(tmp_path / "b"))
    assert calls["n"] == 3  # the re-run trained and validated nothing more
    assert resumed["validation_history"] == pytest.approx(reference["validation_history"])
    assert resumed["metrics"] == pytest.approx(reference["metrics"])
