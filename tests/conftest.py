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
