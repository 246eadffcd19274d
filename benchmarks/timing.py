"""What the benchmarks share: the timed unit of training (one optimiser step) and peak-memory marks."""
from __future__ import annotations

import resource
import time

import torch


def train_step_seconds(model, opt, batch: dict, device: torch.device, bf16: bool = False):
    """(wall seconds, loss) of forward + backward + optimiser step on ``batch`` (moved to ``device``), bf16
    autocast if asked; CUDA is synchronised on both sides so the time is the step's, not its launch's."""
    batch = {k: t.to(device) for k, t in batch.items()}
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = model(batch).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, loss.item()


def memory_mark(device: torch.device) -> int:
    """Bytes that ``memory_peak`` is measured from: on CUDA the memory allocated now (the peak counter is reset),
    on CPU the process's peak resident set so far (``ru_maxrss``, a high-water mark: later use shows only above it)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_peak(device: torch.device) -> int:
    """Peak bytes since the last ``memory_mark`` on CUDA, since the process started on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
