"""Fault injection: real training processes killed (SIGKILL) at random moments, then re-run with the same command,
end with exactly the numbers of an uninterrupted run. Bounded: a fixed seed, 3 kills, each at 30-90 % of the time an
uninterrupted run takes on this machine."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _command(root):
    return [sys.executable, "-m", "genrec", "train", "--config", "configs/tiny.yaml", "train.epochs=3",
            "train.checkpoint_steps=3", "train.progress=false", "name=r", f"output_dir={root}/runs",
            f"results_dir={root}/results"]


def _env():
    return {**os.environ, "PYTHONUNBUFFERED": "1", "GENREC_PROGRESS": "0"}


@pytest.mark.slow
def test_random_kills_then_resume_equal_the_uninterrupted_run(tmp_path):
    t0 = time.time()
    subprocess.run(_command(tmp_path / "ref"), cwd=REPO, env=_env(), check=True, capture_output=True, timeout=300)
    t_ref = time.time() - t0  # kills land at fractions of a whole run, however fast or loaded the machine is
    reference = json.load(open(tmp_path / "ref" / "results" / "runs" / "tiny" / "r.json"))
    rng = random.Random(0)
    record = tmp_path / "run" / "results" / "runs" / "tiny" / "r.json"
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(_command(tmp_path / "run"), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 0.9) * t_ref)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    done = subprocess.run(_command(tmp_path / "run"), cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = json.load(open(record))
    assert kills >= 1
    assert resumed["metrics"] == pytest.approx(reference["metrics"])
    assert resumed["validation_history"] == pytest.approx(reference["validation_history"])
