"""``train.compile``: a training step reads nothing back to the host, so one compiled graph (and a CUDA graph)
serves every step.

Two checks that run on CPU: the model's forward and backward compile as ONE graph (dynamo's ``fullgraph=True``
fails at any ``.item()``, ``int(tensor)``, ``bool(tensor)`` or data-dependent shape, the reads that stall a GPU
stream), and the loop itself reads no tensor between steps when loss logging is off.
"""
import contextlib
import traceback

import pytest
import torch

from genrec.config import load_config
from genrec.training import loop

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _model_and_batch(tmp_path, model_config, static_shapes, overrides=()):
    cfg = load_config(["configs/tiny.yaml", model_config], [
        f"tokenizer.out_dir={tmp_path}/sids", "tokenizer.rqvae.epochs=2", "model.decoder.pack=false", *overrides])
    data = loop.load_dataset(cfg.data)
    ctx = loop.build_context(cfg, data)
    torch.manual_seed(0)
    model = loop.build_model(cfg, ctx)
    model.static_shapes = static_shapes
    ds = model.train_dataset(loop.Split(data, cfg.data.max_history))
    return model, model.collate([ds[i] for i in range(16)])


PREFIX_ROWS = ("model.decoder.prefix_embedding=true", "model.decoder.prefix_output=true")


@pytest.mark.parametrize("model_config,overrides", [
    ("configs/tiny/tiger.yaml", ()), ("configs/tiny/decoder.yaml", ()), ("configs/tiny/decoder.yaml", PREFIX_ROWS),
    ("configs/tiny/decoder.yaml", (*PREFIX_ROWS, "model.decoder.prefix_buckets=16"))],
    ids=["tiger", "decoder", "decoder-prefix-rows", "decoder-prefix-buckets"])
def test_a_static_shape_training_step_is_one_graph(tmp_path, model_config, overrides):
    model, batch = _model_and_batch(tmp_path, model_config, static_shapes=True, overrides=overrides)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    compiled(batch).loss.backward()  # a training step (dropout on); raises on a graph break
    model.eval()
    torch.testing.assert_close(compiled(batch).loss, model(batch).loss)

    model.static_shapes = False  # trimming each batch to its longest row reads the lengths back: a break
    torch._dynamo.reset()
    with pytest.raises(Exception):
        torch.compile(model, backend="eager", fullgraph=True)(batch)
    torch._dynamo.reset()


# Reads of tensors that live on the host on every device, so they never wait for a GPU: the data pipeline's
# (sampler indices, the loader's base seed) and the optimiser's step counter (CPU unless ``capturable``).
HOST_SIDE = ("/torch/utils/data/", "/accelerate/data_loader.py", "/genrec/data/", "/torch/optim/")


@contextlib.contextmanager
def count_host_reads():
    """Record the Python-level reads of tensor values (each one a device sync on a GPU), outside ``HOST_SIDE``."""
    reads = []
    names = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__")
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def wrap(name, fn):
        def read(self, *a, **kw):
            stack = traceback.extract_stack()[:-1]
            if not any(part in f.filename for f in stack for part in HOST_SIDE):
                reads.append(f"{name} at {stack[-1].filename}:{stack[-1].lineno}")
            return fn(self, *a, **kw)

        return read

    for n, fn in saved.items():
        setattr(torch.Tensor, n, wrap(n, fn))
    try:
        yield reads
    finally:
        for n, fn in saved.items():
            setattr(torch.Tensor, n, fn)


@pytest.mark.parametrize("log_every,expect_reads", [(0, False), (1, True)])
def test_the_loop_reads_no_tensor_between_steps_without_logging(tmp_path, monkeypatch, log_every, expect_reads):
    cfg = load_config(["configs/tiny.yaml", "configs/tiny/decoder.yaml"], [
        f"tokenizer.out_dir={tmp_path}/sids", "tokenizer.rqvae.epochs=2", "model.decoder.pack=false",
        f"output_dir={tmp_path}/runs", f"results_dir={tmp_path}/results", "train.epochs=1", "train.max_steps=4",
        "train.progress=false", f"train.log_every={log_every}", "train.trackers=[]"])
    run = loop.setup(cfg)
    run.model.static_shapes = True
    monkeypatch.setattr(loop, "_validate", lambda run, epoch: None)  # evaluation reads ranks back, by design
    monkeypatch.setattr(run.ckpt, "save", lambda state: None)
    monkeypatch.setattr(loop._TokenMeter, "flush", lambda self, **kw: None)  # at checkpoints and epoch ends only
    monkeypatch.setattr(loop, "_check_finite", lambda *a: None)  # likewise: one read of the summed loss there
    with count_host_reads() as reads:
        loop.fit(run)
    run.lock.release()
    assert run.state["global_step"] == 4
    assert bool(reads) == expect_reads, reads
