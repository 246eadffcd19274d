"""Training steps per second, eager vs ``train.compile=true``, for TIGER, the decoder-only model and the LLM on real
data.

For each model the benchmark builds it from its config (semantic IDs from the cached artifact), draws shuffled
training batches of the real dataset and times ``--steps`` optimiser steps (forward + backward + AdamW) after
``--warmup`` steps, interleaving the variants step by step so that machine load hits them alike:

* ``eager``: the model as ``genrec train`` runs it by default (each batch trimmed to its longest row; the
  decoder packs its rows when its config says so),
* ``compiled``: what ``train.compile=true`` runs: ``torch.compile`` (inductor, static shapes, ``--mode``) of the
  same weights with ``static_shapes`` (padded width, no host sync in the step; the decoder unpacked).

Compile time (the first steps) is reported apart. Both variants see the same examples per step, so examples/s
compare directly.

    python benchmarks/bench_compile.py tokenizer.kind=random                  # Beauty, CPU
    python benchmarks/bench_compile.py --device cuda --mode reduce-overhead   # GPU: inductor + CUDA graphs
    python benchmarks/bench_compile.py --device cuda --mode reduce-overhead --models llm --precision bf16 \
        --steps 30 --warmup 10                  # the LLM's launch-bound step (a few widths: a few graphs to record)

Writes ``results/bench/compile_<device>.json``.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from genrec.config import load_config  # noqa: E402
from genrec.data import Split, load_dataset  # noqa: E402
from genrec.models import build_model  # noqa: E402
from genrec.training.loop import build_context  # noqa: E402
from genrec.training.records import cpu_bf16_flags, device_description, write_record  # noqa: E402
from timing import train_step_seconds  # noqa: E402

CONFIGS = {"tiger": ["configs/tiger/beauty.yaml"], "decoder": ["configs/gr/beauty.yaml"],
           "llm": ["configs/llm/beauty.yaml"]}  # llm: --models llm (SmolLM2 + LoRA; widths in steps of 64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="beauty")
    p.add_argument("--models", default="tiger,decoder")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--mode", default="default", help="torch.compile mode (reduce-overhead: CUDA graphs)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--out", default="")
    p.add_argument("overrides", nargs="*", help="dotted config overrides for both models, e.g. tokenizer.kind=random "
                   "(a step costs the same with any IDs of the same shape; random ones need no tokenizer fit)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    variants = {}
    for name in args.models.split(","):
        paths = [q.replace("beauty", args.dataset) for q in CONFIGS[name]]
        cfg = load_config(paths, args.overrides)
        data = load_dataset(cfg.data)
        split = Split(data, cfg.data.max_history)
        torch.manual_seed(0)
        eager = build_model(cfg, build_context(cfg, data)).to(dev).train()
        static = copy.deepcopy(eager)
        static.static_shapes = True
        if name == "decoder":
            static.dcfg.pack = False
        ds = eager.train_dataset(split)
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0)).tolist()
        bs = cfg.train.batch_size
        rows = [[ds[i] for i in order[k * bs:(k + 1) * bs]] for k in range(args.steps + args.warmup)]
        compiled = torch.compile(static, mode=None if args.mode == "default" else args.mode, dynamic=False)
        for label, model, net in (("eager", eager, eager), ("compiled", compiled, static)):
            variants[(name, label)] = {
                "model": model, "batches": [net.collate(r) for r in rows], "batch_size": bs,
                "opt": torch.optim.AdamW(net.parameters(), lr=1e-4), "times": [],
                "params": sum(q.numel() for q in net.parameters())}

    print(f"timing {len(variants)} variants, {args.warmup} + {args.steps} steps each", flush=True)
    load_before = os.getloadavg()  # timings on a shared machine depend on what else runs
    for step in range(args.steps + args.warmup):  # interleaved: variant after variant, step by step
        for v in variants.values():
            v["times"].append(train_step_seconds(v["model"], v["opt"], v["batches"][step], dev,
                                                 args.precision == "bf16")[0])
    results = []
    for (name, label), v in variants.items():
        med = statistics.median(v["times"][args.warmup:])
        results.append({"model": name, "variant": label, "params": v["params"], "batch_size": v["batch_size"],
                        "median_step_s": round(med, 4), "steps_per_s": round(1 / med, 2),
                        "examples_per_s": round(v["batch_size"] / med, 1),
                        "warmup_s": round(sum(v["times"][:args.warmup]), 1)})
        print(f"{name:8s} {label:9s} step {med * 1000:8.1f} ms  {1 / med:6.2f} steps/s  "
              f"{v['batch_size'] / med:8.1f} examples/s  (first {args.warmup} steps {results[-1]['warmup_s']} s)")
    out = args.out or os.path.join(ROOT, "results", "bench", f"compile_{dev.type}.json")
    write_record(out, {"benchmark": "train step, eager vs train.compile (inductor, static shapes)",
                       "dataset": args.dataset, "overrides": args.overrides, "steps": args.steps, "warmup": args.warmup, "mode": args.mode,
                       "precision": args.precision, "threads": args.threads, "torch": torch.__version__,
                       "cpu_bf16_flags": cpu_bf16_flags(), "device": device_description(dev),
                       "load_average_before_after": [list(load_before), list(os.getloadavg())], "results": results})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
