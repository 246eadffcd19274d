"""FSDP (``fully_shard``, 2 processes on CPU over gloo): evaluation reads whole weights, the best weights load into
a sharded model, and a LoRA-style run's best weights leave the frozen base out.

The unwrapped model's ``score`` reads its item table outside any ``forward``; under FSDP that table is a shard
(a DTensor of half the rows) unless ``gathered`` unshards it.
"""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from genrec.models.base import ModelContext


def _model():
    from genrec.config import load_config
    from genrec.models import build_model

    cfg = load_config(["configs/tiny.yaml"], ["model.kind=sasrec", "model.sasrec.hidden=16"])
    torch.manual_seed(0)
    return build_model(cfg, ModelContext(num_items=31, num_users=10)).eval()


def _batch():
    return {"user": torch.arange(4), "history": torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7], [0, 0, 9, 8], [0, 0, 0, 30]]),
            "target": torch.tensor([4, 8, 7, 1])}


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    from torch.distributed.fsdp import fully_shard

    from genrec.training.distributed import gathered, load_full_state_dict

    model = _model()
    with torch.no_grad():
        reference = model.score(_batch())
    full = {k: v.clone() for k, v in model.state_dict().items()}
    for block in model.modules():
        if isinstance(block, torch.nn.TransformerEncoderLayer) or type(block).__name__.endswith("Block"):
            fully_shard(block)
    fully_shard(model)
    table = type(model.item_emb.weight).__name__  # a DTensor shard outside forward
    with torch.no_grad(), gathered(model):
        scores = model.score(_batch())
    # the best weights (a full state dict) into a sharded model that has drifted from them
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    load_full_state_dict(model, model, full)
    with torch.no_grad(), gathered(model):
        reloaded = model.score(_batch())
    torch.save({"table": table, "reference": reference, "scores": scores, "reloaded": reloaded},
               os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_sharded_model_scores_and_reloads_like_the_whole_one(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=2)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert got["table"] == "DTensor"
        torch.testing.assert_close(got["scores"], got["reference"])
        torch.testing.assert_close(got["reloaded"], got["reference"])


def test_best_weights_leave_frozen_parameters_out_and_load_back():
    from genrec.training.distributed import load_full_state_dict, trainable_state

    model = _model()
    model.item_emb.weight.requires_grad_(False)  # a frozen base, as the LLM's under LoRA
    kept = trainable_state(model, model.state_dict())
    assert "item_emb.weight" not in kept and len(kept) == len(model.state_dict()) - 1
    other = _model()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    other.item_emb.weight.requires_grad_(False)
    other.item_emb.weight.data.copy_(model.item_emb.weight)  # the base as loaded from the pretrained files
    load_full_state_dict(other, other, kept)
    torch.testing.assert_close(other.score(_batch()), model.score(_batch()))
    with pytest.raises(ValueError, match="missing"):
        load_full_state_dict(model, model, {k: v for k, v in kept.items() if k != "pos_emb.weight"})
