"""Evaluation runs under the training precision (bf16 autocast on CPU stands in for a GPU), scores stay fp32."""
import pytest
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from genrec.evaluation import evaluate
from genrec.training.records import cpu_bf16_flags, device_description

from genrec.config import ParallelConfig
from genrec.models.parallel import ParallelSidModel

CODES = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 2], [2, 2]])  # (N + 1, L): 4 items, codebooks [3, 3]


def make_model():
    torch.manual_seed(0)
    cfg = ParallelConfig(dim=16, layers=1, heads=2, dropout=0.0, input_dropout=0.0)
    return ParallelSidModel(cfg, "sdpa", CODES, [3, 3], max_history=4).eval()


def make_batch():
    return {"user": torch.tensor([1, 2, 3]), "history": torch.tensor([[0, 0, 1, 2], [1, 2, 3, 4], [0, 0, 0, 3]]),
            "target": torch.tensor([3, 1, 4])}


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """Accelerator state is process-wide: start and leave each test with none (no bf16 leaks into other tests)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


class _Spy(torch.nn.Module):
    """A score model that records whether it ran under autocast and with which dtype its matmul came out."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def score(self, batch):
        self.seen.append((torch.is_autocast_enabled("cpu"), (batch["history"].float() @ torch.ones(4, 2)).dtype))
        return self.inner.score(batch)


def _loader():
    b = make_batch()
    rows = [{k: v[i] for k, v in b.items()} for i in range(3)]
    return DataLoader(rows, batch_size=3)


def test_evaluation_autocasts_like_training_and_scores_stay_fp32():
    acc = Accelerator(mixed_precision="bf16", cpu=True)
    spy = _Spy(make_model())
    metrics = evaluate(spy, _loader(), acc, [5, 10], num_items=4, progress=False)
    assert spy.seen == [(True, torch.bfloat16)] and metrics["users"] == 3
    with acc.autocast():
        scores = spy.inner.score(make_batch())
    assert scores.dtype == torch.float32
    fp32 = spy.inner.score(make_batch())
    assert torch.allclose(scores, fp32, atol=0.1)  # the body in bf16, the heads in fp32



def test_evaluation_in_fp32_runs_without_autocast():
    spy = _Spy(make_model())
    evaluate(spy, _loader(), Accelerator(cpu=True), [5], num_items=4, progress=False)
    assert spy.seen == [(False, torch.float32)]


def test_device_description_names_the_cpu_bf16_flags():
    desc = device_description("cpu")
    flags = cpu_bf16_flags()
    assert (",".join(flags) if flags else "no native bf16") in desc
    assert set(flags) <= {"avx512_bf16", "amx_bf16", "amx_tile"}
