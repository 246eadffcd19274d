"""The run clock leaves out the time a process was stopped: exactly on a scripted clock, and for a real SIGSTOP;
a training run's record counts its pause apart from its train and step seconds."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from genrec.training import loop
from genrec.training.clock import RunClock
from tests.training.test_loop import _cfg


def test_a_late_wake_up_is_a_pause_and_a_short_one_is_not():
    t = [100.0]
    clock = RunClock(interval=1.0, threshold=10.0, now=lambda: t[0], watch=False)
    start = clock()
    for _ in range(3):  # the watcher wakes on time: no pause
        t[0] += 1.0
        clock.tick()
    assert clock() - start == pytest.approx(3.0) and clock.paused == 0.0
    t[0] += 1.0 + 8.0  # 8 s late, under the threshold: counted as running
    assert clock() - start == pytest.approx(12.0) and clock.paused == 0.0
    t[0] += 1.0 + 500.0  # stopped for 500 s
    assert clock.paused == 0.0  # nothing is counted before the next read or wake-up
    assert clock() - start == pytest.approx(13.0) and clock.paused == pytest.approx(500.0)
    t[0] += 1.0
    assert clock() - start == pytest.approx(14.0)


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX job-control signals")
def test_a_stopped_process_does_not_count_its_pause():
    child = textwrap.dedent("""
        import sys, time
        from genrec.training.clock import RunClock
        clock = RunClock(interval=0.05, threshold=0.5)
        run0, wall0 = clock(), time.monotonic()
        print("ready", flush=True)
        sys.stdin.readline()
        print(clock() - run0, time.monotonic() - wall0, clock.paused, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.5)  # running time, which the watcher's wake-ups keep apart from the pause
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(3.0)
        os.kill(proc.pid, signal.SIGCONT)
        out, _ = proc.communicate("go\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    running, wall, paused = map(float, out.split())
    assert wall >= 4.5
    assert paused == pytest.approx(3.0, abs=0.3) and running >= 1.4
    assert running == pytest.approx(wall - paused, abs=0.2)


class _StoppedOnce(RunClock):
    """The run's clock, watcher and all, whose time jumps by 1000 s at the loop's fourth reading (the end of the
    first epoch's steps), as after a 1000 s SIGSTOP during the epoch."""

    def __init__(self):
        self.offset, self.reads = 0.0, 0
        super().__init__(now=lambda: time.monotonic() + self.offset)

    def tick(self):
        if threading.current_thread() is threading.main_thread():  # the loop's readings, not the watcher's
            self.reads += 1
            if self.reads == 4:
                self.offset = 1000.0
        return super().tick()


@pytest.mark.slow
def test_a_paused_run_records_its_pause_apart_from_its_training_time(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "RunClock", _StoppedOnce)
    record = loop.train(_cfg(tmp_path, "train.epochs=1"))
    # the jump, less the watcher's interval, plus the time since its last wake-up (under one interval)
    assert 998.9 < record["paused_seconds"] < 1000.5
    assert 0 < record["step_seconds"] <= record["train_seconds"] < 100
    assert record["wall_seconds"] < 100  # the jump was the scripted clock's alone
