"""A checkpoint of a model with frozen parameters (a LoRA fine-tune) holds only the trainable ones and resumes them
exactly; it refuses other frozen weights, and a checkpoint of every parameter (written before) still loads."""
import os

import pytest
import torch
from accelerate import Accelerator
from torch import nn

from genrec.training.checkpoint import CheckpointMismatch, Checkpointer


class Adapted(nn.Module):
    """A frozen base layer and a trainable adapter, like a LoRA-wrapped linear."""

    def __init__(self, base_seed: int = 0):
        super().__init__()
        torch.manual_seed(base_seed)
        self.base = nn.Linear(8, 8)
        self.base.requires_grad_(False)
        self.adapter = nn.Linear(8, 8, bias=False)
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x):
        return self.base(x) + self.scale * self.adapter(x)


def _prepared(base_seed: int = 0, adapter_seed: int = 1):
    acc = Accelerator(cpu=True)
    model = Adapted(base_seed)
    torch.manual_seed(adapter_seed)
    nn.init.normal_(model.adapter.weight)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model, opt = acc.prepare(model, opt)
    return acc, model, opt


def _step(model, opt):
    loss = model(torch.ones(4, 8)).square().mean()
    loss.backward()
    opt.step()
    opt.zero_grad()


def test_frozen_parameters_are_left_out_and_the_trainable_ones_resume_exactly(tmp_path):
    acc, model, opt = _prepared()
    _step(model, opt)
    ck = Checkpointer(str(tmp_path), acc)
    ck.save({"epoch": 1})
    saved = torch.load(os.path.join(ck.path, "pytorch_model.bin"), weights_only=True)
    assert sorted(saved) == ["adapter.weight", "scale"]  # buffers kept, the frozen base left out
    assert os.path.isfile(os.path.join(ck.path, "frozen.json"))

    acc2, model2, opt2 = _prepared(adapter_seed=7)  # same base, other adapter: the checkpoint must overwrite it
    assert Checkpointer(str(tmp_path), acc2).load() == {"epoch": 1}
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    _step(model, opt)
    _step(model2, opt2)  # the optimiser state came back too: the next step is the same
    assert torch.equal(model.adapter.weight, model2.adapter.weight)


def test_a_checkpoint_refuses_other_frozen_weights(tmp_path):
    acc, model, opt = _prepared(base_seed=0)
    Checkpointer(str(tmp_path), acc).save({"epoch": 1})
    acc2, _, _ = _prepared(base_seed=3)  # another base model under the same adapter
    with pytest.raises(CheckpointMismatch, match="other frozen weights"):
        Checkpointer(str(tmp_path), acc2).load()


def test_a_checkpoint_lacking_a_trainable_parameter_names_the_file(tmp_path):
    acc, model, opt = _prepared()
    ck = Checkpointer(str(tmp_path), acc)
    ck.save({"epoch": 1})
    path = os.path.join(ck.path, "pytorch_model.bin")
    torch.save({"scale": torch.tensor(2.0)}, path)
    acc2, _, _ = _prepared()
    with pytest.raises(CheckpointMismatch, match=r"pytorch_model.bin does not fit the model: missing \['adapter"):
        Checkpointer(str(tmp_path), acc2).load()


def test_a_checkpoint_of_every_parameter_still_loads(tmp_path):
    acc, model, opt = _prepared()
    _step(model, opt)
    ck = Checkpointer(str(tmp_path), None)
    acc.save_state(ck.path, safe_serialization=False)  # no hooks: the base saved too, as before
    with open(os.path.join(ck.path, "trainer_state.json"), "w") as f:
        f.write('{"epoch": 2}')
    assert "base.weight" in torch.load(os.path.join(ck.path, "pytorch_model.bin"), weights_only=True)
    acc2, model2, _ = _prepared(adapter_seed=7)
    assert Checkpointer(str(tmp_path), acc2).load() == {"epoch": 2}
    assert torch.equal(model.adapter.weight, model2.adapter.weight)
