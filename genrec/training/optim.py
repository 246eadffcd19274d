"""Optimisers and learning-rate schedules, dispatched by table (``train.optimizer``, ``train.scheduler``)."""
from __future__ import annotations

import math

import torch

from ..config import TrainConfig, lookup


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on every matrix (linear weights and embedding tables); none on 1-d parameters (biases, norms)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adafactor(groups: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adafactor as T5 and TIGER train with it (T5X defaults): factored second moments, no momentum, update RMS
    clipped at 1, and each step scaled by the parameter's RMS, so ``train.lr`` is a *relative* step size.

    T5 has no 1/sqrt(d) in its attention and initialises its query/key weights at ~(d_model * d_kv)^-1/2; TIGER's
    lr 0.01 (constant, then inverse square root) is this optimiser's recipe and far too large for AdamW there.
    """
    from transformers.optimization import Adafactor

    return Adafactor(groups, lr=cfg.lr, scale_parameter=True, relative_step=False, warmup_init=False)


OPTIMIZERS = {
    "adafactor": adafactor,
    "adamw": lambda groups, cfg: torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98)),
    "adam": lambda groups, cfg: torch.optim.Adam(groups, lr=cfg.lr, betas=(0.9, 0.98)),
    "sgd": lambda groups, cfg: torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9),
}


def constant(step: int, warmup: int, total: int) -> float:
    return min(1.0, (step + 1) / warmup) if warmup else 1.0


def cosine(step: int, warmup: int, total: int) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def linear(step: int, warmup: int, total: int) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    return max(0.0, 1.0 - (step - warmup) / max(1, total - warmup))


def inverse_sqrt(step: int, warmup: int, total: int) -> float:
    """TIGER / T5: constant lr for ``warmup`` steps, then lr * sqrt(warmup / step)."""
    return 1.0 if step < max(1, warmup) else math.sqrt(max(1, warmup) / (step + 1))


SCHEDULERS = {"constant": constant, "cosine": cosine, "linear": linear, "inverse_sqrt": inverse_sqrt}


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, total_steps: int):
    """Return (optimizer, LambdaLR scheduler) for ``cfg`` and a run of ``total_steps`` optimiser steps."""
    opt = lookup(OPTIMIZERS, cfg.optimizer, field="train.optimizer")(_param_groups(model, cfg.weight_decay), cfg)
    fn = lookup(SCHEDULERS, cfg.scheduler, field="train.scheduler")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: fn(s, cfg.warmup_steps, total_steps))
    return opt, sched
