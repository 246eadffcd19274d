"""A run folder's lock and its crash-safe checkpoint (accelerate state + trainer state)."""
from __future__ import annotations

import json
import os
import platform
import shutil

from accelerate import Accelerator

class RunLock:
    """``<run>/.lock`` holding the pid and host of the process training the run: a second process on the same run
    name stops with a message instead of corrupting the folder. A lock whose process is gone (killed run) is stale
    and taken over; one held by this very process (a run retried in the same Python session) is ours."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, ".lock")
        self.me = f"{os.getpid()}@{platform.node()}"

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        if os.path.isfile(self.path):
            with open(self.path) as f:
                holder = f.read().strip()
            pid, _, host = holder.partition("@")
            if holder != self.me and host == platform.node() and pid.isdigit() and _alive(int(pid)):
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


class Checkpointer:
    """``<run>/checkpoint``: accelerate state (model, optimiser, scheduler, RNG) + ``trainer_state.json``.

    Saving writes ``checkpoint.tmp`` (``trainer_state.json`` last: a folder without it is incomplete), moves the
    current checkpoint to ``checkpoint.old``, renames the new one into place and deletes the old one. A kill at any
    point leaves a state that ``recover`` turns back into exactly one complete checkpoint, the newest one.
    """

    def __init__(self, run_dir: str, accelerator: Accelerator):
        self.path = os.path.join(run_dir, "checkpoint")
        self.accelerator = accelerator

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
        except Exception as e:  # noqa: BLE001 - a damaged checkpoint: name it and the fix, not a pickle traceback
            raise ValueError(f"checkpoint {self.path} cannot be loaded ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:120] if str(e) else ''}); delete it to restart the run from "
                             f"the beginning") from None
        with open(os.path.join(self.path, "trainer_state.json")) as f:
            return json.load(f)


__all__ = ["Checkpointer", "RunLock"]
