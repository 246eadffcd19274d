"""Loading the files a run writes and reads back (weights, checkpoints, caches, artifacts) with errors that name the
file and the fix, instead of a pickle or zip traceback."""
from __future__ import annotations

import os
from typing import Any

import torch


def torch_load(path: str, what: str, fix: str, **kwargs) -> Any:
    """``torch.load(path, weights_only=True)``; a missing or corrupt file raises naming ``what`` it is and ``fix``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it exists but cannot be read (truncated, not a torch file, written by something else).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path} does not exist; {fix}")
    try:
        return torch.load(path, weights_only=True, **kwargs)
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means a damaged or foreign file
        raise ValueError(f"{what} {path} is damaged or not a torch file ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:120] if str(e) else ''}); {fix}") from None


__all__ = ["torch_load"]
