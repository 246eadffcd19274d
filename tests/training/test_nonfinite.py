"""A NaN training loss stops the run at the next log, checkpoint or epoch end, before any of them keeps it."""
import os

import pytest

from genrec.cli import main
from genrec.config import load_config
from genrec.training import loop
from genrec.training.stop import NonFiniteLoss

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _nan_from_step(run, step: int) -> None:
    """The model's loss turns NaN from its ``step``-th forward on (one forward per optimiser step here)."""
    forward, calls = run.model.forward, {"n": 0}

    def nan_forward(batch):
        calls["n"] += 1
        out = forward(batch)
        if calls["n"] >= step:
            out.loss = out.loss * float("nan")
        return out

    run.model.forward = nan_forward


def _cfg(tmp_path, *extra):
    return load_config(["configs/tiny.yaml", "configs/tiny/decoder.yaml"], [
        f"tokenizer.out_dir={tmp_path}/sids", "tokenizer.rqvae.epochs=2", f"output_dir={tmp_path}/runs",
        f"results_dir={tmp_path}/results", "train.epochs=1", "train.max_steps=8", "train.progress=false",
        "train.trackers=[]", *extra])


def test_a_nan_loss_stops_the_run_before_a_checkpoint_keeps_it(tmp_path):
    run = loop.setup(_cfg(tmp_path, "train.log_every=3", "train.checkpoint_steps=2"))
    _nan_from_step(run, 4)
    with pytest.raises(NonFiniteLoss, match=r"steps 4-4 .*checkpoint at optimiser step 2 is kept"):
        loop.fit(run)
    assert run.ckpt.state()["global_step"] == 2  # the step-4 checkpoint was never written
    assert run.state["global_step"] == 4
    assert not os.path.exists(run.lock.path)  # the folder is free: a fixed config can resume it


def test_without_logs_or_checkpoints_the_epoch_end_catches_it(tmp_path):
    run = loop.setup(_cfg(tmp_path, "train.log_every=0", "train.checkpoint_steps=0"))
    _nan_from_step(run, 2)
    validated = []
    loop_validate = loop._validate
    try:
        loop._validate = lambda run, epoch: validated.append(epoch)
        with pytest.raises(NonFiniteLoss, match=r"steps 1-8 .*no checkpoint was written"):
            loop.fit(run)
    finally:
        loop._validate = loop_validate
    assert validated == []  # no validation ranked NaN weights


def test_the_cli_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    real_setup = loop.setup

    def setup(cfg):
        run = real_setup(cfg)
        _nan_from_step(run, 1)
        return run

    monkeypatch.setattr(loop, "setup", setup)
    args = ["train", "--config", "configs/tiny.yaml", "--config", "configs/tiny/decoder.yaml",
            f"tokenizer.out_dir={tmp_path}/sids", "tokenizer.rqvae.epochs=2", f"output_dir={tmp_path}/runs",
            f"results_dir={tmp_path}/results", "train.epochs=1", "train.max_steps=2", "train.progress=false",
            "train.trackers=[]", "train.log_every=1"]
    assert main(args) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genrec: training loss is not finite in optimiser steps 1-1")


NAN_ON_RANK_1 = """
import os, sys
from genrec.cli import main
from genrec.training import loop

real_setup = loop.setup

def setup(cfg):
    run = real_setup(cfg)
    if int(os.environ["RANK"]) == 1:  # only this process sees the NaN; the other must stop too, not wait for it
        forward, calls = run.model.forward, {"n": 0}

        def nan_forward(batch):
            calls["n"] += 1
            out = forward(batch)
            if calls["n"] >= 4:  # the last step before a log line: the other process's losses are still finite
                out.loss = out.loss * float("nan")
            return out

        run.model.forward = nan_forward
    return run

loop.setup = setup
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_nan_on_one_process_stops_every_process(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "nan_rank1.py"
    script.write_text(NAN_ON_RANK_1)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           "train", "--config", "configs/tiny.yaml", "--config", "configs/tiny/decoder.yaml",
           f"tokenizer.out_dir={tmp_path}/sids", "tokenizer.rqvae.epochs=2", f"output_dir={tmp_path}/runs",
           f"results_dir={tmp_path}/results", "train.epochs=1", "train.max_steps=6", "train.progress=false",
           "train.trackers=[]", "train.log_every=2", "train.checkpoint_steps=0"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # a hang times out
    assert done.returncode != 0
    lines = [l for l in done.stderr.splitlines() if "training loss is not finite in optimiser steps 3-4" in l]
    assert len(lines) == 2, done.stderr[-3000:]  # both processes, at the same log line
