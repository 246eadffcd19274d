"""A kill at any point of a checkpoint save leaves a folder that resumes from exactly one complete checkpoint;
a checkpoint missing its RNG file, or a run folder in use by another process, stops with a message."""
import json
import os
import subprocess
import sys

import pytest

from genrec.config import load_config
from genrec.training import loop
from genrec.training.loop import Checkpointer, RunLock


def _ckpt(path, epoch):
    os.makedirs(path)
    with open(os.path.join(path, "model.bin"), "w") as f:
        f.write(str(epoch))
    with open(os.path.join(path, "trainer_state.json"), "w") as f:
        json.dump({"epoch": epoch}, f)


def _incomplete(path):
    os.makedirs(path)
    open(os.path.join(path, "model.bin"), "w").close()  # killed before trainer_state.json was written


# (checkpoint, checkpoint.tmp, checkpoint.old) after a kill at each step of save(); the epoch that must survive
STATES = {
    "writing tmp": ((1, "partial", None), 1),
    "tmp complete, nothing renamed": ((1, 2, None), 2),
    "between the renames": ((None, 2, 1), 2),
    "between the renames, tmp partial": ((None, "partial", 1), 1),
    "renamed, old not yet deleted": ((2, None, 1), 2),
    "leftover non-empty old only": ((2, None, "partial"), 2),
    "first save, tmp partial": ((None, "partial", None), None),
}


@pytest.mark.parametrize("name", STATES)
def test_recover_leaves_the_newest_complete_checkpoint(tmp_path, name):
    (cur, tmp, old), want = STATES[name]
    ck = Checkpointer(str(tmp_path), accelerator=None)
    for suffix, v in (("", cur), (".tmp", tmp), (".old", old)):
        if v == "partial":
            _incomplete(ck.path + suffix)
        elif v is not None:
            _ckpt(ck.path + suffix, v)
    ck.recover()
    assert not os.path.exists(ck.path + ".tmp") and not os.path.exists(ck.path + ".old")
    if want is None:
        assert not ck.exists()
    else:
        assert ck.exists() and ck.state()["epoch"] == want


def _cfg(tmp_path, *o):
    return load_config(["configs/tiny.yaml"], [f"output_dir={tmp_path}/runs", f"results_dir={tmp_path}/results",
                                               "train.progress=false", "train.epochs=2", "name=r", *o])


@pytest.mark.slow
def test_a_checkpoint_without_its_rng_state_does_not_resume_silently(tmp_path, kill_at_validation):
    kill_at_validation(2)
    with pytest.raises(KeyboardInterrupt):
        loop.train(_cfg(tmp_path))
    kill_at_validation.disarm()
    os.remove(tmp_path / "runs" / "r" / "checkpoint" / "random_states_0.pkl")
    with pytest.raises(ValueError, match="random_states_0.pkl is missing"):
        loop.train(_cfg(tmp_path))


def test_a_run_folder_in_use_by_another_live_process_is_refused(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        run = tmp_path / "runs" / "r"
        run.mkdir(parents=True)
        lock = RunLock(str(run))
        (run / ".lock").write_text(f"{other.pid}@{lock.me.split('@')[1]}")
        with pytest.raises(ValueError, match=f"in use by process {other.pid}"):
            lock.acquire()
    finally:
        other.kill()
        other.wait()
    lock.acquire()  # the holder is gone: a stale lock is taken over
    assert (run / ".lock").read_text() == lock.me
    lock.release()
    assert not (run / ".lock").exists()
