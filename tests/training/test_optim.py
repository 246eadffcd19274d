"""Optimisers and schedules: the step-size semantics each one promises."""
import math

import pytest
import torch

from genrec.config import TrainConfig
from genrec.training.optim import SCHEDULERS, build_optimizer


def _one_step(optimizer: str, lr: float, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 64, bias=False)  # (64, 1): its squared gradient is rank one, so the factored second moment is exact
    with torch.no_grad():
        model.weight.mul_(scale)
    before = model.weight.detach().clone()
    opt, _ = build_optimizer(model, TrainConfig(optimizer=optimizer, lr=lr, weight_decay=0.0), total_steps=10)
    model(torch.randn(8, 1)).pow(2).sum().backward()
    opt.step()
    return before, model.weight.detach() - before


@pytest.mark.parametrize("scale", [0.01, 1.0])
def test_adafactor_step_is_relative_to_the_parameter_rms(scale):
    # First step: the second moment is g^2, so the normalised update is sign(g) (RMS 1, not clipped) and the
    # parameter moves by lr * RMS(parameter) -- the T5 recipe's meaning of lr, whatever the parameter's scale.
    before, delta = _one_step("adafactor", lr=0.01, scale=scale)
    rms = before.pow(2).mean().sqrt()
    torch.testing.assert_close(delta.abs(), torch.full_like(delta, 0.01 * rms.item()), rtol=1e-3, atol=0)


def test_adamw_step_is_absolute():
    # Adam's first step is lr * sign(g) for every parameter, small or large: lr is an absolute step.
    for scale in (0.01, 1.0):
        _, delta = _one_step("adamw", lr=0.01, scale=scale)
        torch.testing.assert_close(delta.abs(), torch.full_like(delta, 0.01), rtol=1e-3, atol=0)


def test_schedules_by_hand():
    w, T = 10, 110
    assert SCHEDULERS["constant"](4, w, T) == pytest.approx(0.5)
    assert SCHEDULERS["cosine"](w + 50, w, T) == pytest.approx(0.5)  # half-way through the decay
    assert SCHEDULERS["cosine"](T, w, T) == pytest.approx(0.0)
    assert SCHEDULERS["linear"](w + 25, w, T) == pytest.approx(0.75)
    assert SCHEDULERS["inverse_sqrt"](w - 1, w, T) == 1.0
    assert SCHEDULERS["inverse_sqrt"](4 * w - 1, w, T) == pytest.approx(math.sqrt(1 / 4))
