"""The documented multi-process CPU command really starts two processes that train one run and evaluate every user
once (``ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m genrec train ...``)."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_two_process_cpu_run_trains_and_evaluates_every_user_once(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "genrec",
           "train", "--config", "configs/tiny.yaml", "train.epochs=2", "train.progress=false", "name=ddp",
           f"output_dir={tmp_path}/runs", f"results_dir={tmp_path}/results"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.load(open(tmp_path / "results" / "runs" / "tiny" / "ddp.json"))
    assert record["processes"] == 2
    with open(tmp_path / "runs" / "ddp" / "sessions.jsonl") as f:  # written by the main process alone
        (session,) = [json.loads(line) for line in f]
    assert session["processes"] == 2 and session["start_step"] == 0
    assert record["users_evaluated"] == 600 and record["all_splits"]["valid"]["users"] == 600
    assert record["metrics"]["ndcg@10"] > 0.1  # it learned (random ranking gives ~0.02)
