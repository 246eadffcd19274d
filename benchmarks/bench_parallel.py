"""Training and scoring cost of the parallel semantic-ID model beside SASRec, fp32 vs bf16 autocast, on real data.

For each (model, precision) the benchmark builds the model from its frozen config (semantic IDs from the cached
artifact), draws shuffled training batches of the real dataset, and times ``--steps`` optimiser steps (forward +
backward + AdamW, after ``--warmup``), interleaving the variants step by step so that machine load hits them
alike. It projects an epoch (steps per epoch x median step) and times the exact full-catalog scoring of
``--eval-users`` validation users. bf16 runs under ``torch.autocast`` (what ``train.precision=bf16`` does through
accelerate); on a CPU without native bf16 (no AVX512-BF16 / AMX) expect no gain.

    python benchmarks/bench_parallel.py                                  # Beauty, CPU
    python benchmarks/bench_parallel.py --device cuda --steps 50          # on a GPU

Writes ``results/bench/parallel_<device>.json``.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from genrec.config import load_config  # noqa: E402
from genrec.data import EvalDataset, Split, collate, load_dataset  # noqa: E402
from genrec.models import build_model  # noqa: E402
from genrec.training.loop import build_context  # noqa: E402
from genrec.training.records import cpu_bf16_flags, device_description, write_record  # noqa: E402

CONFIGS = {"sasrec": ["configs/sasrec/beauty.yaml"], "parallel": ["configs/parallel/beauty.yaml"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="beauty")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--eval-users", type=int, default=2048)
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--out", default="")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    variants, batches, evals = {}, {}, {}
    for name, paths in CONFIGS.items():
        cfg = load_config([q.replace("beauty", args.dataset) for q in paths], [])
        data = load_dataset(cfg.data)
        split = Split(data, cfg.data.max_history)
        torch.manual_seed(0)
        model = build_model(cfg, build_context(cfg, data)).to(dev).train()
        ds = model.train_dataset(split)
        g = torch.Generator().manual_seed(0)
        order = torch.randperm(len(ds), generator=g).tolist()
        bs = cfg.train.batch_size
        n = args.steps + args.warmup
        batches[name] = [model.collate([ds[i] for i in order[k * bs:(k + 1) * bs]]) for k in range(n)]
        ev = EvalDataset(split, "valid", torch.arange(min(args.eval_users, data.num_users)).numpy())
        evals[name] = [collate([ev[i] for i in range(lo, min(lo + 256, len(ev)))]) for lo in range(0, len(ev), 256)]
        steps_per_epoch = math.ceil(len(ds) / bs)
        for prec in args.precisions.split(","):
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)  # a small lr: the weights barely move
            variants[(name, prec)] = {"model": model, "opt": opt, "times": [], "steps_per_epoch": steps_per_epoch,
                                      "params": sum(q.numel() for q in model.parameters()), "batch_size": bs}

    def autocast(prec):
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=prec == "bf16")

    for step in range(args.steps + args.warmup):  # interleaved: variant after variant, step by step
        for (name, prec), v in variants.items():
            batch = {k: t.to(dev) for k, t in batches[name][step].items()}
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with autocast(prec):
                loss = v["model"](batch).loss
            loss.backward()
            v["opt"].step()
            v["opt"].zero_grad(set_to_none=True)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if step >= args.warmup:
                v["times"].append(time.perf_counter() - t0)
    results = []
    for (name, prec), v in variants.items():
        model = v["model"].eval()
        t0 = time.perf_counter()
        with torch.no_grad(), autocast(prec):
            for b in evals[name]:
                model.score({k: t.to(dev) for k, t in b.items()})
        score_s = time.perf_counter() - t0
        model.train()
        med = statistics.median(v["times"])
        results.append({"model": name, "precision": prec, "params": v["params"], "batch_size": v["batch_size"],
                        "median_step_s": round(med, 4), "steps_per_epoch": v["steps_per_epoch"],
                        "projected_epoch_s": round(med * v["steps_per_epoch"], 1),
                        "score_users_per_s": round(sum(len(b["user"]) for b in evals[name]) / score_s, 1)})
        print(f"{name:9s} {prec:5s} step {med * 1000:7.1f} ms  epoch ~{med * v['steps_per_epoch']:6.1f} s  "
              f"scoring {results[-1]['score_users_per_s']:8.1f} users/s")
    out = args.out or os.path.join(ROOT, "results", "bench", f"parallel_{dev.type}.json")
    write_record(out, {"benchmark": "parallel model vs SASRec: train step, projected epoch, exact scoring",
                       "dataset": args.dataset, "steps": args.steps, "warmup": args.warmup,
                       "threads": args.threads, "cpu_bf16_flags": cpu_bf16_flags(),
                       "device": device_description(dev), "results": results})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
