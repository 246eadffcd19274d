"""Padding of the LLM's training batches over one epoch: random batches vs length buckets sorted by the old proxy
(history items; every item-task row counted as 1) vs by the rows' token counts.

No training: the epoch's rows are built by the model's own ``collate`` code path (``row_tokens``), batched by the
run's samplers (``EpochShuffle``, ``BucketShuffle``) at ``--batch-size``, and each batch is padded to its longest row
as ``collate`` pads it. The record gives real tokens, computed (padded) tokens and their ratio per batching; on a
CPU a step's time follows its computed tokens.

    python benchmarks/bench_bucket_padding.py                    # configs/llm/beauty.yaml, batch 64

Writes ``results/bench/llm_bucket_padding_<dataset>.json``.
"""
from __future__ import annotations

import os
import sys

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from genrec.data.samplers import BucketShuffle, EpochShuffle  # noqa: E402
from genrec.models.llm_lora import LLMRecommender  # noqa: E402
from genrec.training.records import write_record  # noqa: E402
from llm_setup import llm_parser, llm_setup  # noqa: E402


def padding(order: list[int], tokens: np.ndarray, batch_size: int) -> dict:
    real = computed = 0
    for i in range(0, len(order), batch_size):
        batch = tokens[order[i:i + batch_size]]
        real += int(batch.sum())
        computed += int(batch.max()) * len(batch)
    return {"real_tokens": real, "computed_tokens": computed, "computed_per_real": round(computed / real, 3)}


def main(argv=None) -> None:
    p = llm_parser(__doc__, "llm_bucket_padding")
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args(argv)
    device, cfg, split, ctx, out = llm_setup(args)
    model = LLMRecommender.build(cfg.model.llm, ctx.sid_codes, ctx.codebook_sizes, ctx.item_texts,
                                 beam_size=cfg.eval.beam_size, seed=cfg.seed)
    ds = model.train_dataset(split)
    tokens = ds.lengths()  # the rows' token counts
    row_tokens, ds.row_tokens = ds.row_tokens, None
    proxy = ds.lengths()  # what the buckets sorted by before
    ds.row_tokens = row_tokens
    results = {
        "random batches": padding(list(EpochShuffle(len(ds), cfg.seed)), tokens, args.batch_size),
        "buckets by history items (before)": padding(list(BucketShuffle(proxy, args.batch_size, cfg.seed)), tokens,
                                                     args.batch_size),
        "buckets by row tokens": padding(list(BucketShuffle(tokens, args.batch_size, cfg.seed)), tokens,
                                         args.batch_size),
    }
    tasks = {}
    for i in range(len(ds)):
        tasks.setdefault(ds[i]["task"], []).append(int(tokens[i]))
    for name, r in results.items():
        print(f"{name:36s} computed / real tokens {r['computed_per_real']:.3f}", flush=True)
    out = args.out or os.path.join(ROOT, "results", "bench", f"llm_bucket_padding_{cfg.data.name}.json")
    print(write_record(out, {
        "benchmark": "LLM training batches: padding per batching over one epoch (no training)",
        "dataset": cfg.data.name, "base_model": cfg.model.llm.base, "tasks": dict(cfg.model.llm.tasks),
        "loss_on": cfg.model.llm.loss_on, "batch_size": args.batch_size, "rows": len(ds),
        "row_tokens_by_task": {t: {"rows": len(v), "min": min(v), "median": float(np.median(v)), "max": max(v)}
                               for t, v in tasks.items()},
        "results": results}))


if __name__ == "__main__":
    main()
