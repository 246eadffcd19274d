"""The LLM fine-tune step: real tokens/s of the full-vocabulary vs the semantic-ID head, fp32 vs bf16 autocast,
random vs length-bucketed batches, the frozen base held in fp32 or bf16 (``model.llm.dtype``; the trainable LoRA
weights and token rows stay fp32 either way), LoRA dropout on or off, on a real dataset with its semantic IDs and
the configured base model.

Every variant trains the same LoRA model (built once per head, base dtype and dropout) on batches of the epoch's
examples: ``random`` batches are drawn as the default sampler draws them, ``bucketed`` ones as
``train.bucket_by_length=true`` cuts them (``genrec.data.samplers.BucketShuffle`` over the dataset's ``lengths()``:
the rows' token counts), ``bucketed-items`` by history items instead (what the LLM bucketed by before; pick with
``--batchings``). Steps of all variants are interleaved so machine load hits them alike. Real tokens are the
attention mask's ones (padding excluded); real tokens/s = real tokens of a step / its median time, so a variant
that pads less reads the same examples faster.

    python benchmarks/bench_llm_step.py                                   # CPU, configs/llm/beauty.yaml, batch 8
    python benchmarks/bench_llm_step.py --device cuda --batch-size 32 --steps 20

Writes ``results/bench/llm_step_<device>.json``.
"""
from __future__ import annotations

import os
import statistics
import sys

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from genrec.data.samplers import BucketShuffle  # noqa: E402
from genrec.models.llm_lora import LLMRecommender  # noqa: E402
from genrec.training.records import cpu_bf16_flags, device_description, write_record  # noqa: E402
from llm_setup import llm_parser, llm_setup  # noqa: E402
from timing import train_step_seconds  # noqa: E402


def batches(ds, batch_size: int, n: int, seed: int) -> dict[str, list[list[int]]]:
    """``n`` batches of example indices per batching: random, length-bucketed (by the rows' token counts), and,
    for comparison, bucketed by history items (the proxy ``TaskMixture.lengths`` gives without ``row_tokens``)."""
    rng = np.random.default_rng(seed)
    out = {"random": [rng.choice(len(ds), size=batch_size, replace=False).tolist() for _ in range(n)]}
    row_tokens = getattr(ds, "row_tokens", None)
    for name, lengths in (("bucketed", ds.lengths), ("bucketed-items", None)):
        if lengths is None:
            if row_tokens is None:
                continue
            ds.row_tokens = None
            lengths = ds.lengths
        order = list(BucketShuffle(lengths(), batch_size, seed))
        ds.row_tokens = row_tokens
        out[name] = [order[i * batch_size:(i + 1) * batch_size] for i in range(n)]
    return out


def main(argv=None) -> None:
    p = llm_parser(__doc__, "llm_step")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--heads", default="full,sid")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--batchings", default="random,bucketed")
    p.add_argument("--base-dtypes", default="float32", help="model.llm.dtype values, e.g. float32,bfloat16")
    p.add_argument("--lora-dropouts", default=None, help="model.llm.lora.dropout values, e.g. 0.05,0 (default: the "
                   "config's); 0 lets peft skip the dropout of every adapted layer's input")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also profile one timed step per variant (torch.profiler) and record its N costliest ops")
    args = p.parse_args(argv)
    device, cfg, split, ctx, out = llm_setup(args)
    n = args.steps + args.warmup
    variants = {}
    dropouts = [float(x) for x in args.lora_dropouts.split(",")] if args.lora_dropouts else [cfg.model.llm.lora.dropout]
    for base_dtype, head, dropout in [(d, h, q) for d in args.base_dtypes.split(",") for h in args.heads.split(",")
                                      for q in dropouts]:
        cfg.model.llm.head, cfg.model.llm.dtype, cfg.model.llm.lora.dropout = head, base_dtype, dropout
        torch.manual_seed(cfg.seed)
        model = LLMRecommender.build(cfg.model.llm, ctx.sid_codes, ctx.codebook_sizes, ctx.item_texts,
                                     beam_size=cfg.eval.beam_size, seed=cfg.seed).to(device).train()
        ds = model.train_dataset(split)
        opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-5)
        for batching, idx in batches(ds, args.batch_size, n, cfg.seed).items():
            if batching not in args.batchings.split(","):
                continue
            rows = [model.collate([ds[i] for i in b]) for b in idx]
            for prec in args.precisions.split(","):
                variants[(head, base_dtype, dropout, prec, batching)] = {"model": model, "opt": opt, "rows": rows,
                                                                          "times": []}

    for step in range(n):  # interleaved: variant after variant, step by step
        for (head, base_dtype, dropout, prec, batching), v in variants.items():
            v["times"].append(train_step_seconds(v["model"], v["opt"], v["rows"][step], device, prec == "bf16")[0])
    profiles = {}
    for (head, base_dtype, dropout, prec, batching), v in variants.items() if args.profile else ():
        name = f"{head}/{base_dtype}/lora-dropout {dropout}/{prec}/{batching}"
        with torch.profiler.profile() as prof:
            train_step_seconds(v["model"], v["opt"], v["rows"][-1], device, prec == "bf16")
        ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in ops)
        profiles[name] = [
            {"op": e.key, "self_cpu_share": round(e.self_cpu_time_total / total, 3), "calls": e.count}
            for e in ops[:args.profile]]
        print(f"{name}: " + ", ".join(f"{o['op']} {o['self_cpu_share']:.0%}" for o in profiles[name]), flush=True)
    results = []
    for (head, base_dtype, dropout, prec, batching), v in variants.items():
        timed = range(args.warmup, n)
        med = statistics.median(v["times"][i] for i in timed)
        real = statistics.median(int(v["rows"][i]["attention_mask"].sum()) for i in timed)
        padded = statistics.median(int(v["rows"][i]["attention_mask"].numel()) for i in timed)
        results.append({"head": head, "base_dtype": base_dtype, "lora_dropout": dropout, "precision": prec,
                        "batching": batching,
                        "median_step_s": round(med, 3),
                        "real_tokens_per_step": real, "padded_tokens_per_step": padded,
                        "real_tokens_per_s": round(real / med, 1)})
        print(f"{head:4s} {base_dtype:8s} dropout {dropout:<4} {prec:4s} {batching:8s} step {med:6.2f} s  real {real:5.0f} / padded "
              f"{padded:5.0f} tokens  {real / med:8.1f} real tokens/s", flush=True)
    print(write_record(out, {
        "benchmark": "llm fine-tune step: head x base dtype x LoRA dropout x precision x batching", "device": device_description(device),
        "cpu_bf16_flags": cpu_bf16_flags(), "dataset": cfg.data.name, "base_model": cfg.model.llm.base,
        "tasks": dict(cfg.model.llm.tasks), "batch_size": args.batch_size, "steps_timed": args.steps,
        "warmup_steps": args.warmup,
        "threads": args.threads if device.type == "cpu" else None, "lora_r": cfg.model.llm.lora.r,
        "results": results, **({"profile_self_cpu": profiles} if profiles else {})}))


if __name__ == "__main__":
    main()
