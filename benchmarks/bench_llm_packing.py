"""LLM recommender training cost per epoch: one example per prefix (``loss_on=target``) vs one packed row per user
(``loss_on=all``), on a real dataset with its semantic IDs and the configured base model.

Both modes train next-item targets of the training sequences: ``target`` every item after the first (each with
its last ``max_history`` items as context), ``all`` every item after the first within each user's last
``max_history + 1`` items (users with longer sequences lose their oldest targets, as in SASRec; the record gives
both counts). They differ in how many tokens the model reads to train them. For each mode the benchmark

* renders and tokenises the whole epoch (the model's own ``collate``): examples, target items, real tokens, and
  tokens after padding to the longest row of each batch (the loader's shuffled batches);
* times ``--steps`` optimiser steps (forward + backward + AdamW, after ``--warmup``) on batches drawn from the
  epoch, and projects the epoch: steps per epoch x median seconds per step.

Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA; on CPU the process's peak resident set (both modes run in
one process, target first, so the packed row's figure is an upper bound).

    python benchmarks/bench_llm_packing.py                          # CPU, configs/llm/beauty.yaml, batch 8
    python benchmarks/bench_llm_packing.py --device cuda --batch-size 32 --steps 20

Writes ``results/bench/llm_packing_<device>.json``.
"""
from __future__ import annotations

import os
import resource
import statistics
import sys

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from genrec.models.llm_lora import LLMRecommender  # noqa: E402
from genrec.training.records import device_description, write_record  # noqa: E402
from llm_setup import llm_parser, llm_setup  # noqa: E402
from timing import train_step_seconds  # noqa: E402


def epoch_counts(model: LLMRecommender, ds, batch_size: int, seed: int) -> dict:
    """Examples, labelled items, real and padded tokens of one shuffled epoch of ``ds``."""
    lengths, labelled = np.zeros(len(ds), dtype=np.int64), 0
    sid_ids = torch.tensor(model.tokens.all_ids)  # labels also hold eos (target mode): count the ID tokens only
    chunk = 4096
    for start in range(0, len(ds), chunk):
        batch = model.collate([ds[i] for i in range(start, min(start + chunk, len(ds)))])
        lengths[start:start + chunk] = batch["attention_mask"].sum(1).numpy()
        labelled += int(torch.isin(batch["labels"], sid_ids).sum())
    order = np.random.default_rng(seed).permutation(len(ds))
    padded = sum(int(lengths[order[i:i + batch_size]].max()) * len(order[i:i + batch_size])
                 for i in range(0, len(ds), batch_size))
    levels = len(model.codebook_sizes)
    return {"examples": len(ds), "target_items": labelled // levels, "tokens": int(lengths.sum()),
            "padded_tokens": padded, "mean_tokens": round(float(lengths.mean()), 1),
            "max_tokens": int(lengths.max()), "steps_per_epoch": -(-len(ds) // batch_size)}


def time_steps(model: LLMRecommender, ds, batch_size: int, steps: int, warmup: int, lr: float, device, seed: int):
    """Median seconds per optimiser step (and the tokens it read) on shuffled batches of ``ds``."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    rng = np.random.default_rng(seed)
    model.train()
    times, tokens = [], []
    for s in range(warmup + steps):
        idx = rng.choice(len(ds), size=batch_size, replace=False)
        batch = model.collate([ds[int(i)] for i in idx])
        sec, loss = train_step_seconds(model, opt, batch, device, bf16=device.type == "cuda")
        if s >= warmup:
            times.append(sec)
            tokens.append(int(batch["input_ids"].numel()))
    model.eval()
    return statistics.median(times), statistics.median(tokens), loss


def main(argv=None) -> None:
    p = llm_parser(__doc__, "llm_packing")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args(argv)
    device, cfg, split, ctx, out = llm_setup(args, tasks={"seqrec": 1.0})  # alignment tasks: same cost in both modes
    modes = {}
    for loss_on in ("target", "all"):
        cfg.model.llm.loss_on = loss_on
        torch.manual_seed(cfg.seed)
        model = LLMRecommender.build(cfg.model.llm, ctx.sid_codes, ctx.codebook_sizes, ctx.item_texts,
                                     beam_size=cfg.eval.beam_size, seed=cfg.seed).to(device)
        ds = model.train_dataset(split)
        counts = epoch_counts(model, ds, args.batch_size, cfg.seed)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sec, tok, loss = time_steps(model, ds, args.batch_size, args.steps, args.warmup, cfg.train.lr, device,
                                    cfg.seed)
        peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        modes[loss_on] = {**counts, "sec_per_step": round(sec, 3), "tokens_per_step": tok,
                          "tokens_per_s": round(tok / sec, 1), "targets_per_s": round(
                              counts["target_items"] / counts["steps_per_epoch"] / sec, 2),
                          "projected_epoch_hours": round(counts["steps_per_epoch"] * sec / 3600, 2),
                          "last_loss": round(loss, 3), "peak_mem_mb": round(peak, 1)}
        print(loss_on, modes[loss_on], flush=True)
        del model
    t, a = modes["target"], modes["all"]
    record = {
        "benchmark": "llm_packing",
        "device": device_description(device),
        "dataset": cfg.data.name, "base_model": cfg.model.llm.base, "max_history": cfg.data.max_history,
        "batch_size": args.batch_size, "steps_timed": args.steps, "threads": args.threads if device.type == "cpu" else None,
        "lora_r": cfg.model.llm.lora.r, "gradient_checkpointing": cfg.model.llm.gradient_checkpointing,
        "modes": modes,
        "padded_tokens_ratio": round(t["padded_tokens"] / a["padded_tokens"], 2),
        "epoch_time_ratio": round(t["projected_epoch_hours"] / a["projected_epoch_hours"], 2),
        "target_items_ratio": round(a["target_items"] / t["target_items"], 3),
    }
    print(write_record(out, record))


if __name__ == "__main__":
    main()
