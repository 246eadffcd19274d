import os

import pytest
import torch

torch.set_num_threads(1)  # tiny test tensors: one thread is faster and steady on a busy machine
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


@pytest.fixture(scope="session")
def data_root() -> str:
    """The benchmark data folder ($GENREC_DATA_ROOT, else ../shared/data beside the repo)."""
    root = os.environ.get("GENREC_DATA_ROOT") or os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
    if not os.path.isdir(root):
        pytest.skip(f"benchmark data not found at {root!r}: set GENREC_DATA_ROOT")
    return root


@pytest.fixture
def kill_at_validation(monkeypatch):
    """``kill_at_validation(n)`` makes the training loop's n-th validation raise KeyboardInterrupt (a kill in the
    middle of a run); ``kill_at_validation.disarm()`` restores it for the resumed run."""
    from genrec.training import loop

    real = loop.evaluate

    def arm(n: int = 2) -> None:
        calls = {"n": 0}

        def killed(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt(f"simulated kill at validation {n}")
            return real(*args, **kwargs)

        monkeypatch.setattr(loop, "evaluate", killed)

    arm.disarm = lambda: monkeypatch.setattr(loop, "evaluate", real)
    return arm


@pytest.fixture
def kill_in_evaluation(monkeypatch):
    """``kill_in_evaluation(n)`` makes every evaluation with a partial file save after each batch and raise
    KeyboardInterrupt after saving its n-th (a kill in the middle of a long test); it returns the list that each
    evaluation's start appends its already-scored batch count to. ``kill_in_evaluation.disarm()`` stops the kills
    (the saving after each batch stays)."""
    import sys

    ev = sys.modules["genrec.evaluation.evaluate"]  # the module (the package exports a function of that name)
    real_save, real_init = ev.PartialEval.maybe_save, ev.PartialEval.__init__
    seen: list[int] = []

    def init(self, folder, key, accelerator, save_seconds):
        real_init(self, folder, key, accelerator, 0.0)  # save after every batch
        seen.append(int(self.done["batches"]))

    def arm(n: int = 2) -> list[int]:
        def save_then_die(self, batches, *a):
            real_save(self, batches, *a)
            if batches == n:
                raise KeyboardInterrupt(f"simulated kill after evaluation batch {n}")

        monkeypatch.setattr(ev.PartialEval, "__init__", init)
        monkeypatch.setattr(ev.PartialEval, "maybe_save", save_then_die)
        return seen

    arm.disarm = lambda: monkeypatch.setattr(ev.PartialEval, "maybe_save", real_save)
    return arm


@pytest.fixture
def sdpa_nan_on_empty_rows(monkeypatch):
    """PyTorch's SDPA as some CUDA backends compute it: NaN on a query row whose boolean mask sees no key (the CPU
    kernels return zeros there; pytorch/pytorch#103749, #110213). A CPU stand-in for a GPU failure: a left-padded
    batch through code that relies on the zeros gives a NaN loss."""
    import torch.nn.functional as F

    real = F.scaled_dot_product_attention

    def sdpa(q, k, v, attn_mask=None, *args, **kwargs):
        out = real(q, k, v, attn_mask, *args, **kwargs)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            out = out.masked_fill(~attn_mask.any(dim=-1, keepdim=True), float("nan"))
        return out

    monkeypatch.setattr(F, "scaled_dot_product_attention", sdpa)
    return real
