"""What sharded training (FSDP) changes outside ``forward``: evaluation, the best weights and saved adapters.

Under FSDP every rank holds a shard of each parameter, and a module's parameters are gathered only inside its own
``forward``. The evaluator calls ``score`` / ``recommend`` of the unwrapped model, which read weights outside any
forward (an item table, a tied head, a trie over the codes), so they must run inside ``gathered(model)``. Every
rank takes part (the gather is a collective); files are written by the main process only.

``accelerator.get_state_dict(model)`` already returns the full state dict (gathered, on the main process);
``load_full_state_dict`` is its inverse for a sharded model, where ``load_state_dict`` of the unwrapped module
would write full tensors into shards. With DDP or one process both are the plain calls.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn


def _fsdp1(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel

    return any(isinstance(m, FullyShardedDataParallel) for m in model.modules())


def _fsdp2_modules(model: nn.Module) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def is_sharded(model: nn.Module) -> bool:
    return _fsdp1(model) or bool(_fsdp2_modules(model))


@contextlib.contextmanager
def gathered(model: nn.Module):
    """Inside, every parameter of ``model`` is whole on every rank (FSDP1 or FSDP2); a no-op when not sharded.

    FSDP2: every ``fully_shard``-ed module is unsharded (a module that runs its own ``forward`` inside may reshard
    itself after it, and its next forward gathers again); all are resharded on exit. FSDP1: ``summon_full_params``.
    Every rank must enter (collective).
    """
    if _fsdp1(model):
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(model, writeback=False):
            yield
        return
    units = _fsdp2_modules(model)
    for m in units:
        m.unshard()
    try:
        yield
    finally:
        for m in units:
            m.reshard()


def frozen_names(model: nn.Module) -> set[str]:
    """State-dict names of ``model``'s frozen parameters (tied copies included)."""
    return {name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}


def trainable_state(net: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` without the frozen parameters (a LoRA run's best weights are its adapter and new rows,
    not the whole base model again at every improvement); buffers are kept."""
    frozen = frozen_names(net)
    return {k: v for k, v in state_dict.items() if k not in frozen}


def load_full_state_dict(model: nn.Module, net: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a full (gathered) state dict, possibly without the frozen parameters, into ``model`` (prepared) whose
    unwrapped module is ``net``. Raises ValueError naming keys that are neither loaded nor frozen."""
    frozen = frozen_names(net)
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        result = set_model_state_dict(model, state_dict, options=StateDictOptions(full_state_dict=True,
                                                                                    strict=False))
    else:
        result = net.load_state_dict(state_dict, strict=False)
    missing = [k for k in result.missing_keys if k not in frozen]
    if missing or result.unexpected_keys:
        raise ValueError(f"best weights do not fit the model: missing {missing[:5]}, unexpected "
                         f"{list(result.unexpected_keys)[:5]}")


__all__ = ["frozen_names", "gathered", "is_sharded", "load_full_state_dict", "trainable_state"]
