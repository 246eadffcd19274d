"""Two CPU processes (``ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2``) train TIGER, the decoder and the LLM
with LoRA; a run killed (SIGKILL, every process) after a mid-epoch checkpoint and started again with the same
command ends with the numbers of an uninterrupted 2-process run, evaluates every user once, and the LLM saves one
adapter (written by the main process), and best weights and checkpoints without the frozen base. The LLM also
trains an item task whose tokenised rows both processes build into one cache file (the uninterrupted run) and
then read from it."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from genrec.training.checkpoint import _alive

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = {
    "tiger": ["--config", "configs/tiny.yaml", "--config", "configs/tiny/tiger.yaml"],
    "decoder": ["--config", "configs/tiny.yaml", "--config", "configs/tiny/decoder.yaml"],
    "llm": ["--config", "configs/tiny.yaml", "--config", "configs/tiny/decoder.yaml", "model.kind=llm",
            "model.llm.max_length=64", "train.lr=0.01"],
}


def _command(model, root, sids, extra=()):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "genrec",
            "train",
            *MODELS[model], "train.epochs=2", "train.eval_every=1", "train.batch_size=64", "train.checkpoint_steps=2",
            "train.progress=false", "eval.valid_max_users=0", "tokenizer.rqvae.epochs=20", f"tokenizer.out_dir={sids}",
            "name=r", f"output_dir={root}/runs", f"results_dir={root}/results", *extra]


def _env():
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _run(cmd):
    done = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _children(pid):
    kids = []
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                with open(f"/proc/{stat}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:  # ppid
                kids.append(int(stat))
    return kids


def _kill_after_a_mid_epoch_checkpoint(cmd, run_dir):
    """Start ``cmd``; SIGKILL torchrun and its workers (each in a session of its own) once a checkpoint inside
    epoch 1 or 2 exists."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = os.path.join(run_dir, "checkpoint", "trainer_state.json")
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        try:
            with open(state) as f:
                s = json.load(f)
            if s["batch_in_epoch"] > 0 and s["global_step"] >= 4:
                workers = _children(proc.pid)
                for pid in [proc.pid, *workers]:
                    os.kill(pid, signal.SIGKILL)
                proc.wait(timeout=60)
                while any(_alive(pid) for pid in workers):  # gone, or a zombie waiting for its reaper
                    time.sleep(0.1)
                return s
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    proc.wait(timeout=60)
    raise AssertionError("the run ended before a mid-epoch checkpoint could be killed")


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(MODELS))
def test_two_processes_killed_mid_epoch_resume_to_the_uninterrupted_numbers(tmp_path, model):
    extra = []
    if model == "llm":
        sys.path.insert(0, REPO)
        from tests.models.test_llm_lora import tiny_base

        extra = [f"model.llm.base={tiny_base(tmp_path, 'llama')}", "model.llm.tasks.title2id=0.5",
                 f"model.llm.cache_dir={tmp_path / 'tok'}"]
    sids = tmp_path / "sids"
    _run(_command(model, tmp_path / "ref", sids, extra))
    reference = json.load(open(tmp_path / "ref" / "results" / "runs" / "tiny" / "r.json"))
    killed_at = _kill_after_a_mid_epoch_checkpoint(_command(model, tmp_path / "run", sids, extra),
                                                   tmp_path / "run" / "runs" / "r")
    done = _run(_command(model, tmp_path / "run", sids, extra))
    assert "resumed" in done.stdout
    resumed = json.load(open(tmp_path / "run" / "results" / "runs" / "tiny" / "r.json"))
    assert resumed["processes"] == reference["processes"] == 2
    assert resumed["users_evaluated"] == 600 and resumed["all_splits"]["valid"]["users"] == 600
    assert resumed["global_steps"] == reference["global_steps"] > killed_at["global_step"]
    assert resumed["validation_history"] == pytest.approx(reference["validation_history"])
    assert resumed["metrics"] == pytest.approx(reference["metrics"])
    if model == "llm":
        adapter = tmp_path / "run" / "runs" / "r" / "adapter"
        assert resumed["adapter_dir"] == str(adapter) and resumed["adapter_bytes"] > 0
        assert sorted(p.name for p in adapter.iterdir() if p.name.startswith("adapter_model")) == [
            "adapter_model.safetensors"]
        import torch

        best = torch.load(tmp_path / "run" / "runs" / "r" / "best_model.pt", weights_only=True)
        assert any(".lora_A." in k for k in best)
        assert not any(".base_layer." in k for k in best)  # the frozen base is not saved again
        ckpt = torch.load(tmp_path / "run" / "runs" / "r" / "checkpoint" / "pytorch_model.bin", weights_only=True)
        assert any(".lora_A." in k for k in ckpt) and not any(".base_layer." in k for k in ckpt)  # nor here
        assert [p.suffix for p in (tmp_path / "tok").iterdir()] == [".arrow"]  # one file, no leftovers
