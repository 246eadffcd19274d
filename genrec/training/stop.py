"""Stop a training run cleanly on SIGTERM / SIGUSR1 (a scheduler's preemption notice, ``kill``, ``scancel``).

The handler only sets a flag; the loop checks it at the next optimiser-step boundary, writes a mid-epoch
checkpoint there and raises ``TrainingStopped``, so the same command resumes from that step and reproduces the
uninterrupted run (nothing trained since the last scheduled checkpoint is lost). Under several processes the flag
is combined across them (one small collective every ``sync_every`` steps, at the loss-log steps), so every process
saves the same step even when the signal reaches only one of them.
"""
from __future__ import annotations

import signal
import threading

import torch

SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s is not None)


class TrainingStopped(Exception):
    """Raised after the checkpoint of a run stopped by a signal; the same command resumes it."""

    def __init__(self, signum: int, step: int, run_dir: str):
        self.signum, self.step, self.run_dir = signum, step, run_dir
        super().__init__(f"{signal.Signals(signum).name} received: checkpoint written at optimiser step {step} in {run_dir}; "
                         f"the same command resumes the run")


class NonFiniteLoss(FloatingPointError):
    """Raised when the training loss turned NaN or infinite: the run stops before a checkpoint or a validation
    keeps such weights; its last checkpoint (if any) is kept."""

    def __init__(self, first: int, last: int, run_dir: str, checkpoint_step: int | None):
        self.first, self.last, self.run_dir = first, last, run_dir
        kept = (f"its checkpoint at optimiser step {checkpoint_step} is kept" if checkpoint_step
                else "no checkpoint was written")
        super().__init__(f"training loss is not finite in optimiser steps {first}-{last} of {run_dir}; the run stopped "
                         f"({kept}). Usual causes: a query row that attends to nothing on a GPU kernel, fp16 "
                         f"overflow (train.precision), too high a train.lr")


class StopSignal:
    """Context manager: while inside, SIGTERM and SIGUSR1 set a flag instead of killing the process.

    ``requested(step)`` says whether to stop after optimiser step ``step`` (the same answer on every process;
    ``step`` 0 always consults every process). The training loop holds the block over its epochs and the
    validations between them: a signal during a validation stops the run at the first training step after it, or,
    after the last epoch, before the test. Outside the block (the test) the previous handlers apply.
    """

    def __init__(self, accelerator, sync_every: int):
        self.accelerator, self.sync_every = accelerator, max(1, sync_every)
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def requested(self, step: int) -> bool:
        if self.accelerator.num_processes == 1:
            return self.signum is not None
        if step % self.sync_every:
            return False
        flag = torch.tensor([self.signum or 0], dtype=torch.long, device=self.accelerator.device)
        signum = int(self.accelerator.reduce(flag, reduction="max").item())  # one process's signal stops them all
        if signum:
            self.signum = signum
        return bool(signum)
