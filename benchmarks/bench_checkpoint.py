"""Checkpoint size and save / load time of the LLM fine-tune: every parameter (what ``accelerator.save_state``
writes by itself) vs the trainable ones only (``genrec.training.checkpoint.Checkpointer``: the frozen base is
left out and rebuilt from the base model the run loads anyway).

The model is the configured one (default configs/llm/beauty.yaml: SmolLM2-135M + LoRA r16 + new SID rows) after
one AdamW step, so the optimiser state is in the checkpoint as in a run. Each variant is saved and loaded
``--repeats`` times into a temporary folder; the record gives the bytes on disk and the median seconds.

    python benchmarks/bench_checkpoint.py                 # CPU
    python benchmarks/bench_checkpoint.py --device cuda

Writes ``results/bench/checkpoint_llm_<device type>.json``.
"""
from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from accelerate import Accelerator  # noqa: E402

from genrec.models.llm_lora import LLMRecommender  # noqa: E402
from genrec.training.checkpoint import Checkpointer  # noqa: E402
from genrec.training.records import cpu_bf16_flags, device_description, write_record  # noqa: E402
from llm_setup import llm_parser, llm_setup  # noqa: E402


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv=None) -> None:
    p = llm_parser(__doc__, "checkpoint_llm")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    device, cfg, split, ctx, out = llm_setup(args)
    accelerator = Accelerator(cpu=device.type == "cpu")
    torch.manual_seed(cfg.seed)
    model = LLMRecommender.build(cfg.model.llm, ctx.sid_codes, ctx.codebook_sizes, ctx.item_texts,
                                 beam_size=cfg.eval.beam_size, seed=cfg.seed)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-5)
    model, opt = accelerator.prepare(model, opt)
    ds = model.train_dataset(split)
    model(model.collate([ds[i] for i in range(8)])).loss.backward()  # one step: the optimiser has its state
    opt.step()
    opt.zero_grad(set_to_none=True)
    n_all = sum(q.numel() for q in model.parameters())
    n_train = sum(q.numel() for q in model.parameters() if q.requires_grad)

    results, tmp = {}, tempfile.mkdtemp(prefix="genrec-ckpt-")
    try:
        # every parameter first: accelerate's own save_state, before a Checkpointer registers its hooks
        path = os.path.join(tmp, "every")
        saves, loads = [], []
        for _ in range(args.repeats):
            shutil.rmtree(path, ignore_errors=True)
            saves.append(timed(lambda: accelerator.save_state(path, safe_serialization=False)))
            loads.append(timed(lambda: accelerator.load_state(path)))
        results["every parameter"] = {"bytes": folder_bytes(path), "save_s": saves, "load_s": loads}
        ck = Checkpointer(os.path.join(tmp, "run"), accelerator)
        saves, loads = [], []
        for _ in range(args.repeats):
            saves.append(timed(lambda: ck.save({"epoch": 0})))
            loads.append(timed(ck.load))
        results["trainable only"] = {"bytes": folder_bytes(ck.path), "save_s": saves, "load_s": loads}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for name, r in results.items():
        r["median_save_s"] = round(statistics.median(r.pop("save_s")), 3)
        r["median_load_s"] = round(statistics.median(r.pop("load_s")), 3)
        r["megabytes"] = round(r["bytes"] / 2**20, 1)
        print(f"{name:16s} {r['megabytes']:8.1f} MB  save {r['median_save_s']:6.2f} s  load {r['median_load_s']:6.2f} s",
              flush=True)
    print(write_record(out, {
        "benchmark": "LLM checkpoint: every parameter vs trainable only", "device": device_description(device),
        "cpu_bf16_flags": cpu_bf16_flags(), "dataset": cfg.data.name, "base_model": cfg.model.llm.base,
        "base_dtype": cfg.model.llm.dtype, "lora_r": cfg.model.llm.lora.r, "parameters": n_all,
        "trainable_parameters": n_train, "repeats": args.repeats,
        "threads": args.threads if device.type == "cpu" else None, "results": results}))


if __name__ == "__main__":
    main()
