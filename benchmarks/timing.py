"""The timed unit every training benchmark shares: one optimiser step of a model on a batch."""
from __future__ import annotations

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
