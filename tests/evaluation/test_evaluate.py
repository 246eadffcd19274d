import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(__file__)
sys.path.insert(0, HERE)
from ddp_eval_script import run  # noqa: E402


@pytest.mark.slow
def test_data_parallel_eval_counts_every_user_once(tmp_path):
    single = run(num_users=599)
    assert single["users"] == 599
    out = tmp_path / "ddp.json"
    env = {**os.environ, "PYTHONPATH": os.path.join(HERE, "..", "..") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           os.path.join(HERE, "ddp_eval_script.py"), str(out)]
    subprocess.run(cmd, check=True, env=env, timeout=300, capture_output=True)
    ddp = json.load(open(out))
    assert ddp["processes"] == 2
    assert ddp["users"] == 599  # 599 users over 2 processes: the padded duplicate is dropped, none lost
    for key in ("recall@5", "ndcg@5", "recall@10", "ndcg@10"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-12)
