"""A run folder's lock and its crash-safe checkpoint (accelerate state + trainer state)."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil

import torch
from accelerate import Accelerator
from torch import nn

from .distributed import frozen_names

FROZEN_FILE = "frozen.json"  # in a checkpoint that leaves the frozen parameters out: what they were


class RunLock:
    """``<run>/.lock`` holding the pid and host of the process training the run: a second process on the same run
    name stops with a message instead of corrupting the folder. A lock whose process is gone (killed run) is stale
    and taken over; one held by this very process (a run retried in the same Python session) is ours."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, ".lock")
        self.me = f"{os.getpid()}@{platform.node()}"

    def holder(self) -> int | None:
        """The pid of a live process on this machine that holds the lock; None: no lock, a stale one, another host."""
        if not os.path.isfile(self.path):
            return None
        with open(self.path) as f:
            pid, _, host = f.read().strip().partition("@")
        return int(pid) if pid.isdigit() and host == platform.node() and _alive(int(pid)) else None

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        pid = self.holder()
        if pid is not None and pid != os.getpid():
            raise ValueError(f"{os.path.dirname(self.path)} is in use by process {pid} (lock {self.path}); "
                             f"wait for it to finish, or give this run another name (name=...)")
        with open(self.path, "w") as f:
            f.write(self.me)

    def release(self) -> None:
        try:
            with open(self.path) as f:
                if f.read().strip() == self.me:
                    os.remove(self.path)
        except FileNotFoundError:
            pass


def _alive(pid: int) -> bool:
    """A process with this pid runs here (a killed one that its parent has not reaped yet, a zombie, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (macOS): trust kill(0)
        return True


def frozen_fingerprint(model: nn.Module) -> dict:
    """What the frozen parameters are, cheaply: their count and a hash of each one's name, shape and float64 sum
    and norm rounded to 6 digits (the same weights give the same hash on a CPU and a GPU)."""
    h, count = hashlib.sha256(), 0
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if not p.requires_grad:
            t = p.detach()
            h.update(f"{name}{tuple(t.shape)}{float(t.sum(dtype=torch.float64)):.6e}"
                     f"{float(torch.linalg.vector_norm(t, dtype=torch.float64)):.6e}".encode())
            count += t.numel()
    return {"parameters": count, "fingerprint": h.hexdigest()[:16]}


class CheckpointMismatch(ValueError):
    """A checkpoint that loads but does not belong to this run's model (its message says why and what to do)."""


class Checkpointer:
    """``<run>/checkpoint``: accelerate state (model, optimiser, scheduler, RNG) + ``trainer_state.json``.

    A model with frozen parameters (a LoRA fine-tune) is saved without them: the run rebuilds them from the base
    model it loads anyway, so a checkpoint of a 135M base with a 5M adapter is ~65 MB instead of ~625 MB (and of a
    7B base, megabytes instead of 28 GB). ``frozen.json`` records their count and fingerprint; a resume on other
    frozen weights (another base) stops with a message. Checkpoints holding every parameter still load.

    Saving writes ``checkpoint.tmp`` (``trainer_state.json`` last: a folder without it is incomplete), moves the
    current checkpoint to ``checkpoint.old``, renames the new one into place and deletes the old one. A kill at any
    point leaves a state that ``recover`` turns back into exactly one complete checkpoint, the newest one.
    """

    def __init__(self, run_dir: str, accelerator: Accelerator):
        self.path = os.path.join(run_dir, "checkpoint")
        self.accelerator = accelerator
        self._fingerprint: dict | None = None  # of the frozen parameters, computed once (they do not change)
        if accelerator is not None:  # None: a Checkpointer that only recovers / inspects folders
            accelerator.register_save_state_pre_hook(self._drop_frozen)
            accelerator.register_load_state_pre_hook(self._load_models)

    def _drop_frozen(self, models: list, weights: list, output_dir: str) -> None:
        """accelerate's save hook: leave the frozen parameters out of the state dicts it is about to write.
        ``weights`` is empty where accelerate saves the models itself (FSDP, DeepSpeed): those keep every one."""
        dropped = False
        for i, (model, state_dict) in enumerate(zip(models, weights)):
            frozen = frozen_names(model)
            if frozen:
                weights[i] = {k: v for k, v in state_dict.items() if k not in frozen}
                dropped = True
        if dropped and self.accelerator.is_main_process:
            if self._fingerprint is None:
                self._fingerprint = [frozen_fingerprint(m) for m in models]
            with open(os.path.join(output_dir, FROZEN_FILE), "w") as f:
                json.dump(self._fingerprint, f)

    def _load_models(self, models: list, input_dir: str) -> None:
        """accelerate's load hook: a checkpoint without the frozen parameters loads its models here (taking them off
        ``models`` so accelerate loads none), checking that every key it lacks is frozen and that the frozen weights
        are the ones it was trained on."""
        path = os.path.join(input_dir, FROZEN_FILE)
        if not models or not os.path.isfile(path):
            return  # a checkpoint of every parameter: accelerate loads it as it is
        with open(path) as f:
            saved = json.load(f)
        now = [frozen_fingerprint(m) for m in models]
        if saved != now:
            raise CheckpointMismatch(f"{input_dir} was trained on other frozen weights ({saved}; this run loaded {now}): "
                             f"resume with the base model it used, or delete {input_dir} to start again")
        self._fingerprint = now
        for i, model in enumerate(models):
            file = os.path.join(input_dir, f"pytorch_model{f'_{i}' if i else ''}.bin")
            result = model.load_state_dict(torch.load(file, map_location="cpu", weights_only=True), strict=False)
            missing = sorted(set(result.missing_keys) - frozen_names(model))
            if missing or result.unexpected_keys:
                raise CheckpointMismatch(f"{file} does not fit the model: missing {missing[:5]}, unexpected "
                                 f"{list(result.unexpected_keys)[:5]}")
        models.clear()

    @staticmethod
    def _complete(path: str) -> bool:
        return os.path.isfile(os.path.join(path, "trainer_state.json"))

    def recover(self) -> None:
        """Finish or undo an interrupted save (main process; call before ``exists``)."""
        tmp, old = self.path + ".tmp", self.path + ".old"
        if self._complete(tmp):  # killed after the new checkpoint was complete: it is the newest, keep its work
            shutil.rmtree(self.path, ignore_errors=True)
            os.replace(tmp, self.path)
        elif not self._complete(self.path) and self._complete(old):  # killed between the renames, new one partial
            shutil.rmtree(self.path, ignore_errors=True)
            os.replace(old, self.path)
        for leftover in (tmp, old):
            shutil.rmtree(leftover, ignore_errors=True)

    def exists(self) -> bool:
        return self._complete(self.path)

    def save(self, state: dict) -> None:
        tmp, old = self.path + ".tmp", self.path + ".old"
        if self.accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        # torch.save keeps tied weights (T5's shared embedding / head) as one tensor; safetensors would drop
        # the copies and warn at every checkpoint
        self.accelerator.save_state(tmp, safe_serialization=False)
        # every process writes its own RNG state file into tmp: all must be done before tmp is renamed
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            with open(os.path.join(tmp, "trainer_state.json"), "w") as f:
                json.dump(state, f, indent=2)
            shutil.rmtree(old, ignore_errors=True)
            if os.path.exists(self.path):
                os.replace(self.path, old)
            os.replace(tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def check_files(self, processes: int) -> None:
        """Raise ValueError naming a missing file: a checkpoint without its RNG states would resume on other numbers."""
        for i in range(processes):
            rng = os.path.join(self.path, f"random_states_{i}.pkl")
            if not os.path.isfile(rng):
                raise ValueError(f"{rng} is missing: the checkpoint cannot resume this run exactly; delete "
                                 f"{self.path} to restart from the beginning, or restore the file")

    def state(self) -> dict:
        """The saved ``trainer_state.json`` alone (no weights loaded)."""
        with open(os.path.join(self.path, "trainer_state.json")) as f:
            return json.load(f)

    def load(self) -> dict:
        try:
            self.accelerator.load_state(self.path)
        except CheckpointMismatch:
            raise
        except Exception as e:  # noqa: BLE001 - a damaged checkpoint: name it and the fix, not a pickle traceback
            raise ValueError(f"checkpoint {self.path} cannot be loaded ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:120] if str(e) else ''}); delete it to restart the run from "
                             f"the beginning") from None
        with open(os.path.join(self.path, "trainer_state.json")) as f:
            return json.load(f)


__all__ = ["Checkpointer", "RunLock", "CheckpointMismatch", "frozen_fingerprint"]
